"""The identity endpoints: ``serviceaccounts/<name>/token`` (TokenRequest) and CertificateSigningRequest creation.

A CSR records who asked (``spec.username``, ``spec.groups``, ``spec.uid``:
set by the server, never taken from the body). Node CSRs are approved and
signed at once, under the rules of kube-controller-manager's csrapproving
and csrsigning controllers: a node client certificate for a bootstrapper
(or for the node renewing itself), a node serving certificate for the node
itself. Anything else stays pending.
"""
from __future__ import annotations

import base64
from typing import Any

import structlog

from storage.api.timestamps import from_epoch, now
from storage.apiserver.auth import User
from storage.apiserver.satokens import (API_AUDIENCE, DEFAULT_EXPIRATION, MAX_EXPIRATION, MIN_EXPIRATION,
                                        ServiceAccountTokens)
from storage.errors import BadRequest, Conflict
from storage.system import pki

log = structlog.get_logger(__name__)

NODE_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
NODE_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
NODE_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"
_CLIENT_USAGES = {"digital signature", "key encipherment", "client auth"}
_SERVING_USAGES = {"digital signature", "key encipherment", "server auth"}
DEFAULT_CERT_SECONDS = 365 * 24 * 3600


def token_request_target(parts: list[str]) -> tuple[str, str] | None:
    """(namespace, service account) when ``parts`` is ``api/v1/namespaces/<ns>/serviceaccounts/<name>/token``."""
    if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "serviceaccounts" \
            and parts[6] == "token" and parts[3] and parts[5]:
        return parts[3], parts[5]
    return None


def is_csr_create(parts: list[str]) -> bool:
    return parts == ["apis", "certificates.k8s.io", "v1", "certificatesigningrequests"]


def request_token(store: Any, tokens: ServiceAccountTokens, namespace: str, name: str, body: Any) -> dict[str, Any]:
    """The TokenRequest answer (authentication.k8s.io/v1) for service account ``namespace/name``."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a TokenRequest object")
    sa = store.get("serviceaccounts", namespace, name)  # NotFound: serviceaccounts "x" not found
    spec = body.get("spec") or {}
    if not isinstance(spec, dict):
        raise BadRequest("spec: Invalid value: must be an object")
    audiences = spec.get("audiences") or [API_AUDIENCE]
    if not isinstance(audiences, list) or not all(isinstance(a, str) and a for a in audiences):
        raise BadRequest("spec.audiences: Invalid value: must be a list of non-empty strings")
    expiration = spec.get("expirationSeconds")
    if expiration is None:  # absent or null (Go's JSON of a nil *int64): the default, as in Kubernetes
        expiration = DEFAULT_EXPIRATION
    if not isinstance(expiration, int) or isinstance(expiration, bool):
        raise BadRequest("spec.expirationSeconds: Invalid value: must be an integer")
    if expiration < MIN_EXPIRATION:
        raise BadRequest(f"spec.expirationSeconds: Invalid value: {expiration}: "
                         "may not specify a duration less than 10 minutes")
    expiration = min(expiration, MAX_EXPIRATION)
    pod = None
    ref = spec.get("boundObjectRef")
    if ref:
        if not isinstance(ref, dict) or ref.get("kind") != "Pod":
            raise BadRequest(f'spec.boundObjectRef.kind: Unsupported value: "{(ref or {}).get("kind")}": '
                             'supported values: "Pod"')
        # Kubernetes' TokenREST answers, word for word: the pod's own 404, a 400 for another service account,
        # a 409 for a uid that is not the pod's (deleted and made again).
        pod = store.get("pods", namespace, str(ref.get("name") or ""))
        pod_meta = pod.get("metadata") or {}
        pod_sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        if pod_sa != name:
            raise BadRequest(f'cannot bind token for serviceaccount "{name}" to pod running with different '
                             f'serviceaccount name.')
        if ref.get("uid") and ref["uid"] != pod_meta.get("uid"):
            raise Conflict(f'Operation cannot be fulfilled on Pod "{pod_meta.get("name")}": the UID in the bound '
                           f'object reference ({ref["uid"]}) does not match the UID in record. The object might '
                           f'have been deleted and then recreated', kind="Pod", name=str(pod_meta.get("name")))
    sa_uid = (sa.get("metadata") or {}).get("uid", "")
    token, exp = tokens.issue(namespace, name, sa_uid, audiences=list(audiences), expiration=expiration, pod=pod)
    bound = None
    if pod is not None:
        pm = pod.get("metadata") or {}
        bound = {"kind": "Pod", "apiVersion": "v1", "name": pm.get("name"), "uid": pm.get("uid")}
    out_spec: dict[str, Any] = {"audiences": list(audiences), "expirationSeconds": expiration}
    if bound:
        out_spec["boundObjectRef"] = bound
    return {
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now()},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": from_epoch(exp)},
    }


def stamp_requester(body: Any, user: User) -> Any:
    """Who asked is the server's to say: whatever the body claims is replaced."""
    if isinstance(body, dict):
        spec = body.setdefault("spec", {})
        if isinstance(spec, dict):
            spec["username"] = user.name
            spec["uid"] = user.uid
            spec["groups"] = list(user.groups)
            spec.pop("extra", None)
    return body


def auto_approval(csr: dict[str, Any]) -> tuple[str, pki.CsrInfo] | None:
    """(reason, parsed request) when the CSR is one the cluster approves by itself; None to leave it pending."""
    spec = csr.get("spec") or {}
    signer = spec.get("signerName")
    if signer not in (NODE_CLIENT_SIGNER, NODE_SERVING_SIGNER):
        return None
    try:
        info = pki.parse_csr(base64.b64decode(spec.get("request") or ""))
    except ValueError:
        return None
    usages = set(spec.get("usages") or [])
    requester, groups = spec.get("username") or "", set(spec.get("groups") or [])
    if not info.common_name.startswith(NODE_PREFIX) or len(info.common_name) == len(NODE_PREFIX):
        return None
    if info.organizations != (NODES_GROUP,):
        return None
    if signer == NODE_CLIENT_SIGNER:
        if info.dns_names or info.ip_addresses or "client auth" not in usages or not usages <= _CLIENT_USAGES:
            return None
        if "system:bootstrappers" in groups:
            return "AutoApproved: node client certificate for a bootstrapper", info
        if requester == info.common_name and NODES_GROUP in groups:
            return "AutoApproved: node client certificate renewal", info
        return None
    if "server auth" not in usages or not usages <= _SERVING_USAGES:
        return None
    if requester != info.common_name or NODES_GROUP not in groups or not (info.dns_names or info.ip_addresses):
        return None
    return "AutoApproved: node serving certificate for the node itself", info


def approve_and_sign(store: Any, cluster: Any, csr: dict[str, Any]) -> dict[str, Any]:
    """Approve and sign ``csr`` when the rules allow; the stored object either way."""
    decision = auto_approval(csr)
    if decision is None or cluster is None:
        return csr
    reason, info = decision
    spec = csr.get("spec") or {}
    seconds = int(spec.get("expirationSeconds") or DEFAULT_CERT_SECONDS)
    days = max(1, min(seconds, DEFAULT_CERT_SECONDS) // 86400)
    server = spec.get("signerName") == NODE_SERVING_SIGNER
    cert = cluster.sign_csr(info, client=not server, server=server, days=days)
    stamp = now()
    status = {
        "conditions": [{"type": "Approved", "status": "True", "reason": reason.split(":")[0],
                        "message": reason.split(": ", 1)[1], "lastUpdateTime": stamp, "lastTransitionTime": stamp}],
        "certificate": base64.b64encode(cert).decode("ascii"),
    }
    updated = dict(csr)
    updated["status"] = status
    name = (csr.get("metadata") or {}).get("name", "")
    log.info("certificate signing request approved and signed", csr=name, subject=info.common_name,
             signer=spec.get("signerName"))
    return store.update("certificatesigningrequests", updated)
