"""``certificatesigningrequests/<name>/approval`` (``kubectl certificate approve|deny``) and the signing of
approved requests for the ``kubernetes.io/kube-apiserver-client`` and kubelet signers (SEMANTICS CSR1-CSR6).

Kubernetes splits this between the API server (the approval subresource, its strategy and validation, the
CertificateApproval admission plugin) and kube-controller-manager's csrsigning controller. Here the API
server holds the cluster CA's key (it already signs node CSRs when they are created, ``identity``), so an
approved request is signed in the same request, right after the approval is stored: a second write
of the status, by the signer, as the controller would make it. No controller process needs the CA key.
"""
from __future__ import annotations

import base64
import copy
import datetime
from typing import Any, Callable

import structlog

from storage.api.timestamps import now
from storage.apiserver.auth import User
from storage.apiserver.handlers import Handlers, Target
from storage.apiserver.identity import NODE_CLIENT_SIGNER, NODE_PREFIX, NODE_SERVING_SIGNER, NODES_GROUP
from storage.apiserver.rbac import MASTERS, Attributes
from storage.errors import BadRequest, Conflict, FieldError, Forbidden, Invalid
from storage.system import pki

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
APPROVAL = "approval"
APPROVAL_VERBS = ["get", "patch", "update"]
APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"
# The signers kube-controller-manager's csrsigning controller runs, and so the API server here (CSR4, CSR6).
SIGNERS = (CLIENT_SIGNER, NODE_CLIENT_SIGNER, NODE_SERVING_SIGNER)
GROUP = "certificates.k8s.io"
# kube-controller-manager's --cluster-signing-duration default (8760h): the longest certificate it issues.
MAX_CLIENT_SECONDS = 365 * 24 * 3600
MIN_CLIENT_SECONDS = 600  # the signer's lower bound (twice its 5 minutes of backdating)
SIGNER_MANAGER = "kube-controller-manager"  # the field manager the signer's status write is recorded under
_ATTEMPTS = 5
_STATUS_VALUES = ("False", "True", "Unknown")
_CLIENT_OPTIONAL_USAGES = ("digital signature", "key encipherment")


class _Invalid(Invalid):
    """Kubernetes' 422 for the kind: ``CertificateSigningRequest.certificates.k8s.io "x" is invalid: ...``."""

    def __init__(self, errors: list[FieldError], name: str) -> None:
        super().__init__(errors, kind=f"CertificateSigningRequest.{GROUP}", name=name)

    def to_status(self) -> Obj:
        status = super().to_status()
        status["details"].update(kind="CertificateSigningRequest", group=GROUP)
        return status


def _conditions(csr: Obj) -> list[Any]:
    status = csr.get("status")
    found = status.get("conditions") if isinstance(status, dict) else None
    return found if isinstance(found, list) else []


def _of_type(csr: Obj, kind: str) -> list[Obj]:
    return [c for c in _conditions(csr) if isinstance(c, dict) and c.get("type") == kind]


def has_true(csr: Obj, kind: str) -> bool:
    return any(c.get("status") == "True" for c in _of_type(csr, kind))


def approval_errors(new: Obj, old: Obj) -> list[FieldError]:
    """CSR2: Kubernetes' validateConditions and its no-removal rule, for a write of the conditions. What the
    stored object already breaks (both Approved and Denied, a duplicate type) is tolerated, as there."""
    errors: list[FieldError] = []
    old_types = [c.get("type") for c in _conditions(old) if isinstance(c, dict)]
    allow_both = APPROVED in old_types and DENIED in old_types
    allow_duplicates = len(old_types) != len(set(old_types))
    seen: set[Any] = set()
    approved = denied = False
    for i, c in enumerate(_conditions(new)):
        path = f"status.conditions[{i}]"
        if not isinstance(c, dict):
            errors.append(FieldError(path, "Invalid value", "must be an object", c, True))
            continue
        kind, status = c.get("type"), c.get("status")
        if not kind and "" not in old_types:
            errors.append(FieldError(f"{path}.type", "Required value"))
        allowed = ("True",) if kind in (APPROVED, DENIED, FAILED) else _STATUS_VALUES
        if not status:
            errors.append(FieldError(f"{path}.status", "Required value"))
        elif status not in allowed:
            errors.append(FieldError(f"{path}.status", "Unsupported value",
                                     "supported values: " + ", ".join(f'"{v}"' for v in allowed), status, True))
        if not allow_both and kind in (APPROVED, DENIED):
            if (kind == APPROVED and denied) or (kind == DENIED and approved):
                errors.append(FieldError(f"{path}.type", "Invalid value",
                                         "Approved and Denied conditions are mutually exclusive", kind, True))
            approved, denied = approved or kind == APPROVED, denied or kind == DENIED
        if not allow_duplicates:
            if kind in seen:
                errors.append(FieldError(f"{path}.type", "Duplicate value", "", kind, True))
            seen.add(kind)
    for kind in (APPROVED, DENIED, FAILED):
        if len(_of_type(new, kind)) < len(_of_type(old, kind)):
            errors.append(FieldError("status.conditions", "Forbidden",
                                     f'updates may not remove a condition of type "{kind}"'))
    return errors


def _stamp(conditions: list[Any], old: Obj) -> None:
    """Kubernetes' populateConditionTimestamps: lastUpdateTime now when unset; lastTransitionTime kept from
    an old condition of the same type and status, else now."""
    stamp = now()
    for c in conditions:
        if not isinstance(c, dict):
            continue
        if not c.get("lastUpdateTime"):
            c["lastUpdateTime"] = stamp
        if not c.get("lastTransitionTime"):
            same = [o.get("lastTransitionTime") for o in _of_type(old, str(c.get("type")))
                    if o.get("status") == c.get("status") and o.get("lastTransitionTime")]
            c["lastTransitionTime"] = same[0] if same else stamp


def may_approve(authz: Any, user: User, signer: str) -> bool:
    """CSR3: Kubernetes' CertificateApproval admission: verb ``approve`` on ``signers`` (group
    certificates.k8s.io) named ``signer``, or ``<domain>/*`` for every signer of its domain."""
    if MASTERS in user.groups:
        return True
    for name in (signer, signer.split("/")[0] + "/*"):
        attrs = Attributes(user, "approve", True, "", GROUP, "*", "signers", "", name)
        if authz.decide_current(attrs).allowed:
            return True
    return False


def _conflict(name: str) -> Conflict:
    return Conflict(f'Operation cannot be fulfilled on certificatesigningrequests.{GROUP} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    kind="certificatesigningrequests", name=name)


def write(handlers: Handlers, authz: Any, cluster: Any, t: Target, change: Callable[[Obj], Any], *, user: User,
          dry_run: bool, manager: str) -> Obj:
    """An approval write: ``change`` turns the stored object into the one asked for (a PUT's body, a patch
    applied); of it only ``status.conditions`` is taken (CSR1). An approved client request is then signed."""
    status_target = Target(t.info, t.namespace, t.name, "status")
    for _ in range(_ATTEMPTS):
        old = handlers.store.get(t.info.plural, t.store_namespace, t.name)
        wanted = change(copy.deepcopy(old))
        if not isinstance(wanted, dict):
            raise BadRequest("the request body must be a CertificateSigningRequest object")
        meta = wanted.get("metadata") if isinstance(wanted.get("metadata"), dict) else {}
        if meta.get("name") not in (None, "", t.name):
            raise BadRequest(f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                             f"({t.name})")
        old_rv = old["metadata"]["resourceVersion"]
        wanted_rv = meta.get("resourceVersion") or None
        if wanted_rv and wanted_rv != old_rv:
            raise _conflict(t.name)
        conditions = copy.deepcopy(_conditions(wanted))
        _stamp(conditions, old)
        obj = copy.deepcopy(old)
        status = obj["status"] if isinstance(obj.get("status"), dict) else {}
        obj["status"] = {**status, "conditions": conditions}
        if not conditions:
            obj["status"].pop("conditions")
        errors = approval_errors(obj, old)
        if errors:
            raise _Invalid(errors, t.name)
        signer = str((old.get("spec") or {}).get("signerName") or "")
        if not may_approve(authz, user, signer):  # checked against the stored signer, as Kubernetes does
            raise Forbidden(f'certificatesigningrequests.{GROUP} "{t.name}" is forbidden: user not permitted to '
                            f'approve requests with signerName "{signer}"', kind="certificatesigningrequests",
                            name=t.name)
        obj["metadata"]["resourceVersion"] = old_rv
        try:
            saved = handlers.update(status_target, obj, user=user.name, dry_run=dry_run, manager=manager,
                                    via=APPROVAL)
        except Conflict:
            if wanted_rv:
                raise
            continue  # another writer got in between: read again and take the request against that
        if dry_run or cluster is None:
            return saved
        return sign_approved(handlers, cluster, status_target, saved)
    raise _conflict(t.name)


def client_usage_error(usages: list[Any]) -> str | None:
    """The csrsigning controller's check of a kube-apiserver-client request's usages (CSR4)."""
    for usage in usages:
        if usage != "client auth" and usage not in _CLIENT_OPTIONAL_USAGES:
            return f"invalid usage for client certificate: {usage}"
    if "client auth" not in usages:
        return "missing required usage for client certificate: client auth"
    return None


def lifetime(spec: Obj) -> datetime.timedelta:
    """CSR4: spec.expirationSeconds, at most the signer's maximum (one year), at least 10 minutes."""
    seconds = spec.get("expirationSeconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool):
        return datetime.timedelta(seconds=MAX_CLIENT_SECONDS)
    return datetime.timedelta(seconds=max(MIN_CLIENT_SECONDS, min(seconds, MAX_CLIENT_SECONDS)))


def _usages_error(usages: set[str], with_rsa: tuple[str, ...]) -> str | None:
    """Kubernetes' kubelet signers take exactly ``with_rsa`` or it without key encipherment (non-RSA keys)."""
    without_rsa = set(with_rsa) - {"key encipherment"}
    if usages != set(with_rsa) and usages != without_rsa:
        return f"usages did not match [{' '.join(sorted(with_rsa))}]"
    return None


def kubelet_client_error(info: pki.CsrInfo, usages: set[str]) -> str | None:
    """Kubernetes' ValidateKubeletClientCSR, the kube-apiserver-client-kubelet signer's check (CSR6)."""
    if info.organizations != (NODES_GROUP,):
        return "subject organization is not system:nodes"
    for sans, kind in ((info.dns_names, "DNS"), (info.emails, "Email"), (info.ip_addresses, "IP"),
                       (info.uris, "URI")):
        if sans:
            return f"{kind} subjectAltNames are not allowed"
    if not info.common_name.startswith(NODE_PREFIX):
        return f"subject common name does not begin with '{NODE_PREFIX}'"
    return _usages_error(usages, ("client auth", "digital signature", "key encipherment"))


def kubelet_serving_error(info: pki.CsrInfo, usages: set[str]) -> str | None:
    """Kubernetes' ValidateKubeletServingCSR, the kubelet-serving signer's check (CSR6)."""
    if info.organizations != (NODES_GROUP,):
        return "subject organization is not system:nodes"
    if not info.dns_names and not info.ip_addresses:
        return "DNS or IP subjectAltName is required"
    if info.emails:
        return "Email subjectAltNames are not allowed"
    if info.uris:
        return "URI subjectAltNames are not allowed"
    problem = _usages_error(usages, ("digital signature", "key encipherment", "server auth"))
    if problem is not None:
        return problem
    if not info.common_name.startswith(NODE_PREFIX):
        return f"subject common name does not begin with '{NODE_PREFIX}'"
    return None


def signed_status(cluster: Any, csr: Obj) -> Obj | None:
    """The status the signer writes for ``csr``: its certificate, or a Failed condition when the request does
    not fit the signer; None when there is nothing to do (not approved, failed or issued already, a signer
    this cluster does not run)."""
    spec = csr.get("spec") or {}
    status = dict(csr.get("status") or {})
    signer = spec.get("signerName")
    if signer not in SIGNERS or not has_true(csr, APPROVED) or has_true(csr, FAILED) or status.get("certificate"):
        return None
    usages = [u for u in spec.get("usages") or [] if isinstance(u, str)]
    problem = client_usage_error(usages) if signer == CLIENT_SIGNER else None
    info = None
    if problem is None:
        try:
            info = pki.parse_csr(base64.b64decode(spec.get("request") or ""), any_key=True)
        except ValueError as e:
            problem = f"unable to parse csr: {e}"
    if info is not None and signer == NODE_CLIENT_SIGNER:
        problem = kubelet_client_error(info, set(usages))
    elif info is not None and signer == NODE_SERVING_SIGNER:
        problem = kubelet_serving_error(info, set(usages))
    if problem is not None or info is None:
        stamp = now()
        status["conditions"] = [*_conditions(csr), {
            "type": FAILED, "status": "True", "reason": "SignerValidationFailure", "message": problem,
            "lastUpdateTime": stamp, "lastTransitionTime": stamp}]
        return status
    server = signer == NODE_SERVING_SIGNER
    cert = cluster.sign_csr(info, client=not server, server=server, days=1, lifetime=lifetime(spec))
    status["certificate"] = base64.b64encode(cert).decode("ascii")
    return status


def sign_approved(handlers: Handlers, cluster: Any, status_target: Target, csr: Obj) -> Obj:
    """As kube-controller-manager's csrsigning controller, for ``kubernetes.io/kube-apiserver-client``: the
    approved request signed by the cluster CA (or marked Failed), written through /status."""
    for _ in range(_ATTEMPTS):
        status = signed_status(cluster, csr)
        if status is None:
            return csr
        updated = {**csr, "status": status}
        try:
            saved = handlers.update(status_target, updated, user=SIGNER_MANAGER, manager=SIGNER_MANAGER)
        except Conflict:
            csr = handlers.get(Target(status_target.info, status_target.namespace, status_target.name))
            continue
        spec = csr.get("spec") or {}
        log.info("certificate signing request signed" if status.get("certificate") else "certificate signing failed",
                 csr=status_target.name, signer=spec.get("signerName"), requester=spec.get("username"))
        return saved
    return csr
