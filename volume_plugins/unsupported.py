"""Volume types of Kubernetes that Stowage does not mount: a pod naming one gets a FailedMount event
saying so, instead of "no volume plugin" (SV1). The README lists them under "unsupported volume types"."""
from __future__ import annotations

from pathlib import Path

from storage.errors import PermanentError
from volume_plugins.base import VolumeContext, VolumePlugin

# Source key -> Kubernetes' plugin name. Each needs a vendor's cloud, SAN or daemon that no Debian
# package provides and that Kubernetes itself has removed or moved to CSI.
UNSUPPORTED: dict[str, str] = {
    "vsphereVolume": "kubernetes.io/vsphere-volume",
    "quobyte": "kubernetes.io/quobyte",
    "cinder": "kubernetes.io/cinder",
    "portworxVolume": "kubernetes.io/portworx-volume",
    "scaleIO": "kubernetes.io/scaleio",
    "storageos": "kubernetes.io/storageos",
    "fc": "kubernetes.io/fc",
    "photonPersistentDisk": "kubernetes.io/photon-pd",
}


def refusal(source_key: str) -> str:
    return f'volume type "{source_key}" is not supported by Stowage (see README: unsupported volume types)'


class UnsupportedVolumePlugin(VolumePlugin):
    def __init__(self, source_key: str, name: str) -> None:
        self.source_key = source_key  # type: ignore[misc]  # one instance per refused type
        self.name = name  # type: ignore[misc]

    def setup(self, ctx: VolumeContext) -> Path:
        raise PermanentError(refusal(self.source_key))


def unsupported_plugins() -> list[VolumePlugin]:
    return [UnsupportedVolumePlugin(key, name) for key, name in UNSUPPORTED.items()]
