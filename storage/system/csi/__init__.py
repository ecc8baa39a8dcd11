"""A CSI (Container Storage Interface) client over gRPC on a Unix socket.

The stubs ``csi_pb2``/``csi_pb2_grpc`` are generated from the spec's ``csi.proto`` (see their header)
and committed, so a checkout needs only ``grpcio`` and ``protobuf`` at run time. Lives in
``storage/system`` because both the provisioner (control path) and the volume plugin (node path) use it.
"""
from storage.system.csi.client import (
    CsiClient,
    CsiError,
    DriverInfo,
    NodeInfo,
    VolumeUsage,
    secret_parameter_keys,
)

__all__ = ["CsiClient", "CsiError", "DriverInfo", "NodeInfo", "VolumeUsage", "secret_parameter_keys"]
