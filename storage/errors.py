"""Errors shared by every layer, each mapping to a Kubernetes ``Status``.

The API server turns any ``StowageError`` into the HTTP status and ``Status``
body that a Kubernetes client expects; the client turns them back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def _shown(value: Any) -> str:
    """A value in a field error as the Kubernetes API server shows it: strings quoted, booleans and null
    as JSON, maps and lists in JSON (never a Python repr such as ``False`` or ``{'a': 'b'}``)."""
    if isinstance(value, str):
        return f'"{value}"'
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True)
class FieldError:
    """One field problem, as Kubernetes reports it in ``Status.details.causes``."""

    field: str
    reason: str  # e.g. "Invalid value", "Required value", "Unsupported value", "Forbidden"
    detail: str = ""
    value: Any = None
    has_value: bool = False

    def message(self) -> str:
        if self.has_value:
            shown = _shown(self.value)
            text = f"{self.field}: {self.reason}: {shown}"
        else:
            text = f"{self.field}: {self.reason}"
        return f"{text}: {self.detail}" if self.detail else text

    def cause(self) -> dict[str, str]:
        """A ``StatusCause``: as Kubernetes, the message leaves out the field, which clients print before it."""
        reason_type = _CAUSE_TYPES.get(self.reason, "FieldValueInvalid")
        message = self.message()
        if self.field and message.startswith(self.field + ": "):
            message = message[len(self.field) + 2:]
        return {"reason": reason_type, "message": message, "field": self.field}

    @classmethod
    def from_cause(cls, cause: dict[str, Any]) -> "FieldError":
        field_path = str(cause.get("field", ""))
        message = str(cause.get("message", ""))
        if field_path and message.startswith(field_path + ": "):  # servers that repeated the field
            message = message[len(field_path) + 2:]
        label = _CAUSE_LABELS.get(str(cause.get("reason", "")), "")
        if label and (message == label or message.startswith(label + ": ")):
            return cls(field_path, label, message[len(label) + 2:])
        return cls(field_path, label or "Invalid value", message)


_CAUSE_TYPES = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Unsupported value": "FieldValueNotSupported",
    "Forbidden": "FieldValueForbidden",
    "Duplicate value": "FieldValueDuplicate",
    "Too long": "FieldValueTooLong",
}
_CAUSE_LABELS = {v: k for k, v in _CAUSE_TYPES.items()}


class StowageError(Exception):
    code: int = 500
    reason: str = "InternalError"

    def __init__(self, message: str = "", *, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.kind:
            details["kind"] = self.kind
        if details or self.code == 404:  # clients read details of a 404 unconditionally (kubectl debug)
            status["details"] = details
        return status


class BadRequest(StowageError):
    code, reason = 400, "BadRequest"


class Unauthorized(StowageError):
    code, reason = 401, "Unauthorized"


class Forbidden(StowageError):
    code, reason = 403, "Forbidden"


class NotFound(StowageError):
    code, reason = 404, "NotFound"


class MethodNotAllowed(StowageError):
    code, reason = 405, "MethodNotAllowed"


class AlreadyExists(StowageError):
    code, reason = 409, "AlreadyExists"


class Conflict(StowageError):
    """The object changed since it was read (resourceVersion mismatch): re-read and retry."""

    code, reason = 409, "Conflict"


class ApplyConflict(Conflict):
    """Server-side apply would change fields that other managers own; ``force`` takes them over.

    As Kubernetes' Status: reason Conflict, one ``FieldManagerConflict`` cause per field.
    """

    def __init__(self, message: str, causes: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.causes = causes

    def to_status(self) -> dict[str, Any]:
        status = super().to_status()
        status["details"] = {"causes": list(self.causes)}
        return status


class Gone(StowageError):
    """A watch asked for a revision that has been compacted away."""

    code, reason = 410, "Expired"


class RequestEntityTooLarge(StowageError):
    """A request body or an object over a size limit; the message names the limit."""

    code, reason = 413, "RequestEntityTooLarge"


class Invalid(StowageError):
    code, reason = 422, "Invalid"

    def __init__(self, errors: list[FieldError], *, kind: str = "", name: str = "") -> None:
        self.errors = list(errors)
        joined = ", ".join(e.message() for e in self.errors)
        if kind or name:
            message = f'{kind} "{name}" is invalid: {joined}' if len(self.errors) == 1 else f'{kind} "{name}" is invalid: [{joined}]'
        else:
            message = joined
        super().__init__(message, kind=kind, name=name)

    def to_status(self) -> dict[str, Any]:
        status = super().to_status()
        status.setdefault("details", {})["causes"] = [e.cause() for e in self.errors]
        return status


class UnsupportedMediaType(StowageError):
    code, reason = 415, "UnsupportedMediaType"


class TooManyRequests(StowageError):
    code, reason = 429, "TooManyRequests"

    def __init__(self, message: str = "", *, retry_after: int = 1, causes: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        # 0: no Retry-After header, so that clients (client-go) report the refusal instead of retrying it themselves.
        self.retry_after = retry_after
        self.causes = list(causes or [])

    def to_status(self) -> dict[str, Any]:
        status = super().to_status()
        details: dict[str, Any] = {}
        if self.retry_after > 0:
            details["retryAfterSeconds"] = self.retry_after
        if self.causes:
            details["causes"] = list(self.causes)
        status["details"] = details
        return status


class BackendConflict(StowageError):
    """A backend refused a change in the state its asset is in (a pool volume still mounted by a pod, a
    filesystem that failed its check): unlike ``Conflict``, a write race of the store retried at once, it
    waits with back-off."""

    code, reason = 409, "Conflict"


class TemporaryError(StowageError):
    """A backend said 'not now': retry after ``delay`` seconds."""

    code, reason = 503, "ServiceUnavailable"

    def __init__(self, message: str = "", delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(StowageError):
    """A backend said 'never': record it on the object and in an Event, do not retry blindly."""

    code, reason = 500, "InternalError"


class InfeasibleError(PermanentError):
    """The backend refuses the request itself (CSI INVALID_ARGUMENT): asking again with the same input cannot
    succeed, so a VolumeAttributesClass change is Infeasible until the user names another class (VAC5)."""


_BY_CODE_REASON: dict[tuple[int, str], type[StowageError]] = {
    (cls.code, cls.reason): cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, AlreadyExists, Conflict, Gone, Invalid,
                RequestEntityTooLarge)
}


def from_status(status: dict[str, Any], http_code: int) -> StowageError:
    """Rebuild the matching error from a Kubernetes ``Status`` body (used by the client)."""
    reason = str(status.get("reason", ""))
    code = int(status.get("code", http_code) or http_code)
    message = str(status.get("message", "")) or f"HTTP {code}"
    details = status.get("details") or {}
    if code == 429:
        return TooManyRequests(message, retry_after=int(details.get("retryAfterSeconds") or 0),
                               causes=[c for c in details.get("causes") or [] if isinstance(c, dict)])
    cls = _BY_CODE_REASON.get((code, reason))
    if cls is None:
        cls = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone, 422: Invalid}.get(code, StowageError)
    if cls is Invalid:
        causes = details.get("causes") or []
        err = Invalid([FieldError.from_cause(c) for c in causes])
        err.message = message
        err.args = (message,)
        return err
    err = cls(message, kind=str(details.get("kind", "")), name=str(details.get("name", "")))
    if cls is StowageError:
        err.code = code
    return err
