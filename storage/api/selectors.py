"""Label and field selectors (SEMANTICS B4).

Two forms of label selector exist, as in Kubernetes:
- the structured ``LabelSelector`` (``matchLabels`` AND ``matchExpressions``)
  found in specs, matched by ``selector_matches`` directly on dicts because the
  binder runs it over tens of thousands of volumes;
- the string form of ``?labelSelector=`` and ``kubectl -l``
  (``app=web,tier!=db,env in (a,b),!legacy,partition``), parsed once into a
  ``Selector``.

Semantics of absence: ``NotIn``, ``!=`` and ``DoesNotExist`` match objects
without the key; ``In``, ``=`` and ``Exists`` need it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping

from storage.api.modelbase import WireModel
from storage.api.names import is_qualified_name, is_valid_label_value
from storage.errors import BadRequest

__all__ = [
    "FieldSelector",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Requirement",
    "Selector",
    "parse_field_selector",
    "parse_label_selector",
    "selector_from_dict",
    "selector_matches",
]

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class LabelSelectorRequirement(WireModel):
    key: str
    operator: str
    values: list[str] | None = None


class LabelSelector(WireModel):
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    op = expr.get("operator")
    key = expr.get("key")
    if op == "In":
        return key in labels and labels[key] in (expr.get("values") or ())
    if op == "NotIn":
        return key not in labels or labels[key] not in (expr.get("values") or ())
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    # Validation rejects unknown operators; an unvalidated one must not select anything.
    return False


def selector_matches(selector: Mapping[str, Any] | LabelSelector | None, labels: Mapping[str, str] | None) -> bool:
    """Whether a structured selector selects an object with these labels.

    ``None`` and ``{}`` select everything (a PV claim without selector takes any volume).
    """
    if not selector:
        return True
    if isinstance(selector, LabelSelector):
        selector = selector.model_dump(by_alias=True, exclude_none=True)
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        if not _expression_matches(expr, labels):
            return False
    return True


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        present = self.key in labels
        if op == "exists":
            return present
        if op == "!":
            return not present
        if op in ("=", "in"):
            return present and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        (bound,) = self.values
        return have > int(bound) if op == "gt" else have < int(bound)

    def __str__(self) -> str:
        vals = sorted(self.values)
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return "!" + self.key
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(vals)})"
        sym = {"gt": ">", "lt": "<"}.get(self.operator, self.operator)
        return f"{self.key}{sym}{vals[0]}"


@dataclass(frozen=True)
class Selector:
    """A parsed label selector; all requirements must hold. Empty selects everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def selector_from_dict(selector: Mapping[str, Any] | None) -> Selector:
    """A structured selector as a ``Selector`` (to share code with string selectors)."""
    if not selector:
        return Selector()
    reqs = [Requirement(k, "=", frozenset([v])) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    op_map = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or ():
        op = expr.get("operator")
        if op not in op_map:
            raise BadRequest(f'"{op}" is not a valid label selector operator')
        reqs.append(Requirement(expr.get("key", ""), op_map[op], frozenset(expr.get("values") or ())))
    return Selector(tuple(reqs))


# --- the string form --------------------------------------------------------

_SPECIAL = set("!=,()<>")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "!=":
            if text.startswith("!=", i) or text.startswith("==", i):
                tokens.append(text[i:i + 2])
                i += 2
            else:
                tokens.append(c)
                i += 1
        elif c in _SPECIAL:
            tokens.append(c)
            i += 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in _SPECIAL:
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


def _is_identifier(tok: str | None) -> bool:
    return tok is not None and tok not in _SPECIAL and tok not in ("!=", "==")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def fail(self, found: str | None, expected: str) -> BadRequest:
        shown = "" if found is None else found
        return BadRequest(f"unable to parse requirement: found '{shown}', expected: {expected}")

    def key(self) -> str:
        tok = self.take()
        if not _is_identifier(tok) or tok in ("in", "notin"):
            raise self.fail(tok, "identifier")
        assert tok is not None
        errs = is_qualified_name(tok)
        if errs:
            raise BadRequest(f'unable to parse requirement: invalid label key "{tok}": {"; ".join(errs)}')
        return tok

    def value(self) -> str:
        tok = self.peek()
        # "key=" selects the empty value, as in Kubernetes.
        if tok is None or tok in (",", ")"):
            return ""
        if not _is_identifier(tok):
            raise self.fail(tok, "identifier")
        self.pos += 1
        errs = is_valid_label_value(tok)
        if errs:
            raise BadRequest(f'unable to parse requirement: invalid label value: "{tok}": {"; ".join(errs)}')
        return tok

    def value_set(self) -> frozenset[str]:
        tok = self.take()
        if tok != "(":
            raise self.fail(tok, "'('")
        values: list[str] = []
        if self.peek() == ")":
            self.pos += 1
            raise BadRequest("unable to parse requirement: for 'in', 'notin' operators, values set can't be empty")
        while True:
            values.append(self.value())
            tok = self.take()
            if tok == ")":
                return frozenset(values)
            if tok != ",":
                raise self.fail(tok, "',' or ')'")

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.pos += 1
            return Requirement(self.key(), "!")
        key = self.key()
        tok = self.peek()
        if tok is None or tok == ",":
            return Requirement(key, "exists")
        self.pos += 1
        if tok in ("=", "=="):
            return Requirement(key, "=", frozenset([self.value()]))
        if tok == "!=":
            return Requirement(key, "!=", frozenset([self.value()]))
        if tok in ("in", "notin"):
            return Requirement(key, tok, self.value_set())
        if tok in (">", "<"):
            bound = self.take()
            if not _is_identifier(bound):
                raise self.fail(bound, "identifier")
            assert bound is not None
            try:
                int(bound)
            except ValueError:
                raise BadRequest(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer, got '{bound}'") from None
            return Requirement(key, "gt" if tok == ">" else "lt", frozenset([bound]))
        raise self.fail(tok, "'=', '!=', '==', 'in', 'notin'")

    def parse(self) -> Selector:
        reqs: list[Requirement] = []
        if self.peek() is None:
            return Selector()
        while True:
            reqs.append(self.requirement())
            tok = self.take()
            if tok is None:
                return Selector(tuple(reqs))
            if tok != ",":
                raise self.fail(tok, "',' or end of string")
            if self.peek() is None:
                raise self.fail(None, "identifier")


def parse_label_selector(text: str | None) -> Selector:
    """Parse ``app=web,tier!=db,env in (a,b),!legacy,partition``; raises ``BadRequest``."""
    if not text or not text.strip():
        return Selector()
    return _Parser(text).parse()


# --- field selectors ----------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    operator: str  # "=" or "!="
    value: str

    @property
    def field(self) -> str:
        return ".".join(self.path)


# Selectable fields whose value Kubernetes takes from elsewhere in the object (its kinds' ToSelectableFields):
# a job's successful count is its succeeded, and v1 clients' spec.host is a pod's spec.nodeName.
_FIELD_VALUE_PATHS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("status", "successful"): ("status", "succeeded"),
    ("spec", "host"): ("spec", "nodeName"),
}
# FS3: what ToSelectableFields gives for a Go bool or int field the object leaves out (its zero value, printed).
_FIELD_ZERO_VALUES: dict[tuple[str, ...], str] = {
    ("spec", "hostNetwork"): "false",  # a pod's
    ("spec", "unschedulable"): "false",  # a node's
    ("status", "replicas"): "0",  # a replica set's or a replication controller's
    ("status", "successful"): "0",  # a job's
}


def _field_text(obj: Mapping[str, Any], path: tuple[str, ...]) -> str:
    if path == ("source",):  # an event's: its source's component, else (the newer recorder's) its reporter
        source = obj.get("source")
        component = source.get("component") if isinstance(source, Mapping) else None
        return str(component or obj.get("reportingComponent") or "")
    if path[0] == "status" and path[1:] in (("podIP",), ("podIPs",)):
        # FS3: a pod's podIP is its first podIPs entry; status.podIPs passes the conversion function but is not
        # among the selectable fields, so its value is always empty.
        status = obj.get("status")
        if path[1] == "podIPs" or not isinstance(status, Mapping):
            return ""
        ips = status.get("podIPs")
        first = ips[0] if isinstance(ips, list) and ips and isinstance(ips[0], Mapping) else None
        return str(first.get("ip") or "") if first is not None else str(status.get("podIP") or "")
    cur: Any = obj
    for part in _FIELD_VALUE_PATHS.get(path, path):
        if not isinstance(cur, Mapping):
            return _FIELD_ZERO_VALUES.get(path, "")
        cur = cur.get(part)
        if cur is None:
            return _FIELD_ZERO_VALUES.get(path, "")
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return cur if isinstance(cur, str) else str(cur)


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector: a predicate over an object in wire form."""

    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        for req in self.requirements:
            equal = _field_text(obj, req.path) == req.value
            if equal != (req.operator == "="):
                return False
        return True

    __call__ = matches

    def empty(self) -> bool:
        return not self.requirements


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise BadRequest(f"invalid field selector: invalid escape sequence in {value!r}")
            out.append(value[i + 1])
            i += 2
            continue
        if c in ",=":
            raise BadRequest(f"invalid field selector: unescaped {c!r} in value {value!r}")
        out.append(c)
        i += 1
    return "".join(out)


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse ``metadata.name=x,spec.nodeName=n,status.phase!=Bound``; raises ``BadRequest``.

    A missing field compares as the empty string, so ``spec.nodeName=`` selects
    unscheduled pods.
    """
    if not text or not text.strip():
        return FieldSelector()
    reqs: list[FieldRequirement] = []
    for term in _split_unescaped(text, ","):
        for op in ("!=", "==", "="):
            idx = term.find(op)
            if idx != -1 and (op != "=" or term[idx - 1:idx] != "!"):
                break
        else:
            raise BadRequest(f"invalid field selector: '{term}': expected an operator ('=', '==' or '!=')")
        field_path, raw = term[:idx].strip(), term[idx + len(op):]
        if not field_path or any(not p for p in field_path.split(".")):
            raise BadRequest(f"invalid field selector: '{term}': field path must be non-empty dotted names")
        reqs.append(FieldRequirement(tuple(field_path.split(".")), "!=" if op == "!=" else "=", _unescape(raw)))
    return FieldSelector(tuple(reqs))


FieldPredicate = Callable[[Mapping[str, Any]], bool]


# The fields a kind's API accepts in a field selector: the kinds with a field label conversion function of
# their own in Kubernetes take exactly these (a cluster-scoped one's without metadata.namespace), every other
# kind metadata.name and metadata.namespace; anything else is a 400 there and here.
_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
FIELD_SELECTABLE: dict[str, tuple[str, ...]] = {
    "pods": (*_COMMON_FIELDS, "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName",
             "spec.host"),
    "events": (*_COMMON_FIELDS, "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"),
    "nodes": ("metadata.name", "spec.unschedulable"),
    "namespaces": ("metadata.name", "status.phase"),
    "secrets": (*_COMMON_FIELDS, "type"),
    "replicationcontrollers": (*_COMMON_FIELDS, "status.replicas"),
    "replicasets": (*_COMMON_FIELDS, "status.replicas"),
    "jobs": (*_COMMON_FIELDS, "status.successful"),
    "services": (*_COMMON_FIELDS, "spec.clusterIP", "spec.type"),
    "certificatesigningrequests": ("metadata.name", "spec.signerName"),
}


def check_field_selector(resource: str, text: str | None) -> None:
    """A ``BadRequest`` naming the first field ``resource``'s API does not select on, in Kubernetes' words:
    its kind's own conversion function's, else the default one's."""
    own = FIELD_SELECTABLE.get(resource)
    allowed = own or _COMMON_FIELDS
    for req in parse_field_selector(text).requirements:
        field_path = ".".join(req.path)
        if field_path in allowed:
            continue
        if own is not None:
            raise BadRequest(f"field label not supported: {field_path}")
        shown = ", ".join(f'"{f}"' for f in allowed)
        raise BadRequest(f'"{field_path}" is not a known field selector: only {shown}')
