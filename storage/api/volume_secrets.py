"""Which Secret a network volume source needs on the node (Kubernetes' VisitPodSecretNames and the
in-tree plugins' secret lookups), shared by the agent, which reads it through the API for the plugin,
and the node authorizer, which lets a node read exactly these.

The plugin finds the Secret's contents in ``VolumeContext.data[SECRET_DATA_KEY]`` (key -> bytes;
None when the Secret does not exist).
"""
from __future__ import annotations

from typing import Any

SECRET_DATA_KEY = "volume:secret"

# Source key -> the field holding its SecretReference (or LocalObjectReference inline).
SECRET_REF_FIELDS: dict[str, str] = {
    "rbd": "secretRef",
    "cephfs": "secretRef",
    "iscsi": "secretRef",
    "flexVolume": "secretRef",
    "cinder": "secretRef",
    "scaleIO": "secretRef",
    "storageos": "secretRef",
}


def volume_secret_ref(source: dict[str, Any], pod_namespace: str, inline: bool) -> tuple[str, str] | None:
    """(namespace, name) of the Secret a pod volume (``inline``) or a PV's spec (``source``) names, or None.
    An inline source's Secret is in the pod's namespace; a PV's names its namespace or defaults to the pod's."""
    for key, ref_field in SECRET_REF_FIELDS.items():
        spec = source.get(key)
        if not isinstance(spec, dict):
            continue
        ref = spec.get(ref_field)
        if isinstance(ref, dict) and ref.get("name"):
            namespace = pod_namespace if inline else str(ref.get("namespace") or pod_namespace)
            return namespace, str(ref["name"])
        return None
    csi = source.get("csi")
    if isinstance(csi, dict):
        ref = csi.get("nodePublishSecretRef") if inline else (csi.get("nodeStageSecretRef") or csi.get("nodePublishSecretRef"))
        if isinstance(ref, dict) and ref.get("name"):
            return (pod_namespace if inline else str(ref.get("namespace") or pod_namespace)), str(ref["name"])
    return None
