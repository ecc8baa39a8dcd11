"""ServiceAccount admission's change to a new pod, as Kubernetes' plugin makes it: every pod runs as a service
account (``default`` unless it names one) and, unless ``automountServiceAccountToken: false`` on the pod (or else
on its service account), gets the ``kube-api-access-<suffix>`` projected volume (a bound token, the cluster CA, its
namespace) mounted read-only at ``/var/run/secrets/kubernetes.io/serviceaccount`` in every container. Used by the
API server's admission and for the pods controllers write themselves (PS2)."""
from __future__ import annotations

import secrets
from typing import Any

from storage.errors import NotFound

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
VOLUME_PREFIX = "kube-api-access-"
TOKEN_EXPIRATION = 3607  # Kubernetes' figure: an hour, plus a little to tell it from user-requested tokens
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def api_access_volume(name: str) -> dict[str, Any]:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def with_service_account(store: Any, pod: dict[str, Any]) -> dict[str, Any]:
    """The new pod as ServiceAccount admission leaves it (a copy; ``pod`` is not changed)."""
    pod = dict(pod)
    spec = dict(pod.get("spec") or {})
    sa_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa_name
    spec["serviceAccount"] = sa_name  # the deprecated alias, kept equal as Kubernetes does
    pod["spec"] = spec
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    if not _automount(store, namespace, spec, sa_name):
        return pod
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    if any(m.get("mountPath") == MOUNT_PATH for c in containers for m in c.get("volumeMounts") or []):
        return pod  # the pod mounts something of its own there
    volume = VOLUME_PREFIX + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
    spec["volumes"] = [*(spec.get("volumes") or []), api_access_volume(volume)]
    mount = {"name": volume, "readOnly": True, "mountPath": MOUNT_PATH}
    for key in ("initContainers", "containers"):
        if spec.get(key):
            spec[key] = [{**c, "volumeMounts": [*(c.get("volumeMounts") or []), mount]} for c in spec[key]]
    return pod


def _automount(store: Any, namespace: str, spec: dict[str, Any], sa_name: str) -> bool:
    if spec.get("automountServiceAccountToken") is not None:
        return bool(spec["automountServiceAccountToken"])
    try:
        sa = store.get("serviceaccounts", namespace, sa_name)
    except NotFound:
        return True  # the agent waits for the account (and its token) before starting the pod
    return sa.get("automountServiceAccountToken") is not False
