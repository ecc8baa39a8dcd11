"""A CSI (Container Storage Interface) client over gRPC on a Unix socket.

The stubs ``csi_pb2``/``csi_pb2_grpc`` are generated from the spec's ``csi.proto`` (see their header)
and committed, so a checkout needs only ``grpcio`` and ``protobuf`` at run time. Lives in
``storage/system`` because both the provisioner (control path) and the volume plugin (node path) use it.

Importing this package does not import grpc: the names below load ``client`` (grpc and the stubs, about
12 MiB resident) on first use, so an agent with no CSI driver never pays for them (PF41).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.system.csi.client import (
        CsiClient,
        CsiError,
        DriverInfo,
        NodeInfo,
        VolumeUsage,
        secret_parameter_keys,
    )

__all__ = ["CsiClient", "CsiError", "DriverInfo", "NodeInfo", "VolumeUsage", "secret_parameter_keys"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from storage.system.csi import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
