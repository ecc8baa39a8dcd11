"""The admission chain (storage.apiserver.admission.Admission): each plugin sees the object the one before it
returned, and a plugin that passes the object through as it came costs no new request (PF98)."""
from __future__ import annotations

from typing import Any

from storage.api.registry import by_plural
from storage.apiserver.admission import Admission, AdmissionRequest

Obj = dict[str, Any]


class PassThrough:
    def __init__(self, seen: list[AdmissionRequest]) -> None:
        self.seen = seen

    def admit(self, req: AdmissionRequest) -> Obj:
        self.seen.append(req)
        return req.obj


class Relabel:
    """Gives back a new object with one more label, as a mutating plugin may."""

    def __init__(self, seen: list[AdmissionRequest], label: str) -> None:
        self.seen, self.label = seen, label

    def admit(self, req: AdmissionRequest) -> Obj:
        self.seen.append(req)
        meta = dict(req.obj["metadata"])
        meta["labels"] = {**meta.get("labels", {}), self.label: "yes"}
        return {**req.obj, "metadata": meta}


def _request(obj: Obj) -> AdmissionRequest:
    info = by_plural("configmaps")
    assert info is not None
    return AdmissionRequest("CREATE", info, obj, None, store=None, user="alice")  # type: ignore[arg-type]


def test_each_plugin_sees_what_the_one_before_it_returned() -> None:
    seen: list[AdmissionRequest] = []
    original = {"metadata": {"name": "c", "namespace": "default"}}
    chain = Admission([PassThrough(seen), Relabel(seen, "a"), PassThrough(seen), Relabel(seen, "b"), PassThrough(seen)])
    result = chain.admit(_request(original))
    assert result["metadata"]["labels"] == {"a": "yes", "b": "yes"}
    assert [sorted((r.obj["metadata"].get("labels") or {})) for r in seen] == [[], [], ["a"], ["a"], ["a", "b"]]
    assert all(r.user == "alice" and r.operation == "CREATE" and r.old is None for r in seen)
    assert original == {"metadata": {"name": "c", "namespace": "default"}}, "the caller's object is not changed"


def test_plugins_that_pass_the_object_through_share_one_request() -> None:
    seen: list[AdmissionRequest] = []
    req = _request({"metadata": {"name": "c", "namespace": "default"}})
    result = Admission([PassThrough(seen) for _ in range(5)]).admit(req)
    assert result is req.obj
    assert all(r is req for r in seen), "no copy of the request for a plugin that changed nothing"
