"""A node credential and VolumeAttachments through the real API server (AD2, after Kubernetes' node
authorizer, which lets a node get only the attachments whose spec.nodeName is that node).

The agent watches attachments to mount a disk as soon as it is attached; it must see its own node's and
nothing of another node's: a get is 403, a list or watch leaves them out, and no write is allowed.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from sec_authz_util import AuthzServer, authz_server, until
from storage.errors import Forbidden

Obj = dict[str, Any]
N1, N2 = "system:node:n1", "system:node:n2"
USERS = {N1: ("system:nodes",), N2: ("system:nodes",)}
PATH = "/apis/storage.k8s.io/v1/volumeattachments"


def attachment(name: str, node: str, pv: str) -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": name},
            "spec": {"attacher": "kubernetes.io/aws-ebs", "nodeName": node, "source": {"persistentVolumeName": pv}}}


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[AuthzServer]:
    with authz_server(tmp_path, USERS) as s:
        admin = s.admin()
        admin.create(attachment("va-n1", "n1", "disk-a"))
        admin.create(attachment("va-n2", "n2", "disk-b"))
        yield s


def test_ad2_a_node_gets_lists_and_watches_only_its_own_attachments(srv: AuthzServer) -> None:
    n1 = srv.client(N1)
    assert n1.get("volumeattachments", "va-n1")["spec"]["nodeName"] == "n1"
    resp = srv.http(N1, "GET", f"{PATH}/va-n2")
    assert resp.status_code == 403
    assert "disk-b" not in resp.text
    assert resp.json()["message"].endswith("no relationship found between node 'n1' and this object")
    assert [v["metadata"]["name"] for v in n1.list("volumeattachments")[0]] == ["va-n1"]
    assert [v["metadata"]["name"] for v in srv.client(N2).list("volumeattachments")[0]] == ["va-n2"]

    # A watch shows a new attachment of its own node at once, and never one of another node.
    _items, rv = n1.list("volumeattachments")
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        for event in n1.watch("volumeattachments", resource_version=rv, timeout=20):
            seen.append(event["object"]["metadata"]["name"])
            if event["object"]["metadata"]["name"] == "va-n1-new":
                done.set()
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    admin = srv.admin()
    admin.create(attachment("va-n2-new", "n2", "disk-c"))  # first: it must not show up
    admin.create(attachment("va-n1-new", "n1", "disk-d"))
    assert done.wait(30), f"the node's own attachment never reached its watch: {seen}"
    thread.join(timeout=5)
    assert seen == ["va-n1-new"]
    # The graph follows: the new one is readable by name at once (read-your-writes), the other node's not.
    assert n1.get("volumeattachments", "va-n1-new")["spec"]["source"]["persistentVolumeName"] == "disk-d"
    assert srv.http(N1, "GET", f"{PATH}/va-n2-new").status_code == 403
    admin.delete("volumeattachments", "va-n1-new")
    until(lambda: srv.http(N1, "GET", f"{PATH}/va-n1-new").status_code in (403, 404), "the deleted attachment gone")


def test_ad2_a_node_cannot_write_attachments_not_even_its_own(srv: AuthzServer) -> None:
    """Attaching is the control plane's; a node that could mark a disk attached or detached would lie to it."""
    n1 = srv.client(N1)
    own = n1.get("volumeattachments", "va-n1")
    with pytest.raises(Forbidden):
        n1.create(attachment("va-forged", "n1", "disk-b"))
    with pytest.raises(Forbidden):
        n1.update({**own, "metadata": {**own["metadata"], "labels": {"x": "y"}}})
    with pytest.raises(Forbidden):
        n1.update_status({**own, "status": {"attached": True}})
    with pytest.raises(Forbidden):
        n1.delete("volumeattachments", "va-n2")
    assert srv.http(N1, "DELETE", f"{PATH}/va-n1").status_code == 403
    assert srv.admin().get("volumeattachments", "va-n1").get("status", {}).get("attached") is not True
