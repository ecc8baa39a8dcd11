"""What form a read answers in, from the Accept header: the object, a Table, or metadata only.

kubectl's ``get`` asks for ``application/json;as=Table;v=v1;g=meta.k8s.io``
first and plain JSON as a fallback; client-go's metadata client asks for
``as=PartialObjectMetadata``. The first alternative the server can produce
wins (highest ``q`` first, then the client's order). A request nothing here
can satisfy gets plain JSON, which is what every client also accepts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from storage.api import printing
from storage.api.registry import ResourceInfo
from storage.errors import BadRequest

JSON_TYPE = "application/json"
_META_GROUP = "meta.k8s.io"
_META_VERSIONS = ("v1", "v1beta1")
_INCLUDE_OBJECT = ("None", "Metadata", "Object")


@dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str]
    q: float = 1.0


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges in the order the server should try them (highest q first, then as sent)."""
    out: list[MediaRange] = []
    for part in (header or "").split(","):
        pieces = [p.strip() for p in part.split(";")]
        if not pieces[0]:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key:
                params[key] = value
        if q > 0:
            out.append(MediaRange(pieces[0].lower(), params, q))
    return sorted(out, key=lambda m: -m.q)  # sorted() is stable: equal q keeps the client's order


def accepts_json(header: str | None) -> bool:
    """Whether plain JSON is acceptable (no Accept header at all counts as yes)."""
    ranges = parse_accept(header)
    return not ranges or any(
        m.type in (JSON_TYPE, "application/*", "*/*") and "as" not in m.params for m in ranges
    )


@dataclass(frozen=True)
class Rendering:
    form: str = "json"  # "json", "Table", "PartialObjectMetadata", "PartialObjectMetadataList"
    version: str = "v1"

    @property
    def content_type(self) -> str:
        if self.form == "json":
            return JSON_TYPE
        return f"{JSON_TYPE};as={self.form};v={self.version};g={_META_GROUP}"


def negotiate(header: str | None) -> Rendering:
    for m in parse_accept(header):
        if m.type not in (JSON_TYPE, "application/*", "*/*"):
            continue  # protobuf, yaml...: the client offers JSON further down, or gets JSON anyway
        form = m.params.get("as")
        if form is None:
            return Rendering()
        if m.params.get("g") != _META_GROUP or m.params.get("v") not in _META_VERSIONS:
            continue
        if form in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList"):
            return Rendering(form, m.params["v"])
    return Rendering()


def include_object(query: Any) -> str:
    value = query.get("includeObject") or "Metadata"
    if value not in _INCLUDE_OBJECT:
        raise BadRequest(f'includeObject: Unsupported value: "{value}": supported values: "Metadata", "None", "Object"')
    return value


def _partial(obj: dict[str, Any], version: str) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": f"{_META_GROUP}/{version}",
            "metadata": obj.get("metadata") or {}}


def render_list(r: Rendering, info: ResourceInfo, listed: dict[str, Any], query: Any) -> dict[str, Any]:
    if r.form == "Table":
        out = printing.table(info.kind, listed["items"], include_object=include_object(query),
                             list_metadata=listed.get("metadata"))
        return {**out, "apiVersion": f"{_META_GROUP}/{r.version}"}
    if r.form.startswith("PartialObjectMetadata"):
        return {"kind": "PartialObjectMetadataList", "apiVersion": f"{_META_GROUP}/{r.version}",
                "metadata": listed.get("metadata") or {}, "items": [_partial(o, r.version) for o in listed["items"]]}
    return listed


def render_one(r: Rendering, info: ResourceInfo, obj: dict[str, Any], query: Any) -> dict[str, Any]:
    if r.form == "Table":
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        out = printing.table(info.kind, [obj], include_object=include_object(query),
                             list_metadata={"resourceVersion": rv} if rv else {})
        return {**out, "apiVersion": f"{_META_GROUP}/{r.version}"}
    if r.form.startswith("PartialObjectMetadata"):
        return _partial(obj, r.version)
    return obj


def watch_transform(r: Rendering, info: ResourceInfo, query: Any) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """How each watched object is sent: a one-row Table (column definitions in the first only, as Kubernetes)."""
    if r.form == "Table":
        included = include_object(query)
        first = [True]

        def to_table(obj: dict[str, Any]) -> dict[str, Any]:
            out = printing.table(info.kind, [obj], include_object=included, with_columns=first[0],
                                 list_metadata={"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion")})
            first[0] = False
            return {**out, "apiVersion": f"{_META_GROUP}/{r.version}"}

        return to_table
    if r.form.startswith("PartialObjectMetadata"):
        return lambda obj: _partial(obj, r.version)
    return None
