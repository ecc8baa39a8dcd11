"""The real kubectl's typed commands, which send protobuf only, against the real API server.

``kubectl create configmap|secret|namespace|service|deployment|role|...`` post
``Content-Type: application/vnd.kubernetes.protobuf`` (accepting protobuf, then
JSON) and never fall back to JSON. For each one: the body kubectl sent (read
from its ``-v=9`` log) decodes to exactly the JSON kubectl prints for the same
command with ``--dry-run=client -o json``; and the object it created reads
back exactly as the same JSON, posted by ``kubectl create -f``, does: the
protobuf path takes the JSON path's defaulting, validation and admission.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

from serverutil import running_server
from storage.api.k8s_protobuf import MEDIA_TYPE, decode_object
from support import kubectl_binary

BINARY = bytes([0, 1, 2, 0x80, 0xFE, 0xFF])  # not UTF-8: kubectl puts it in binaryData / data as bytes

# (resource to read back, name, the kubectl arguments after "create")
COMMANDS: list[tuple[str, str, list[str]]] = [
    ("configmap", "cm1", ["configmap", "cm1", "--from-literal=a=b", "--from-literal=empty=", "--from-file=bin={bin}"]),
    ("secret", "s1", ["secret", "generic", "s1", "--from-literal=k=v", "--from-file=bin={bin}"]),
    ("secret", "reg1", ["secret", "docker-registry", "reg1", "--docker-server=r.example", "--docker-username=u",
                        "--docker-password=p"]),
    ("namespace", "ns1", ["namespace", "ns1"]),
    ("service", "svc1", ["service", "clusterip", "svc1", "--tcp=80:8080", "--tcp=443:https"]),
    ("service", "np1", ["service", "nodeport", "np1", "--tcp=80:8080", "--node-port=30080"]),
    ("service", "ext1", ["service", "externalname", "ext1", "--external-name=db.example.com"]),
    ("deployment", "d1", ["deployment", "d1", "--image=nginx", "--replicas=0", "--port=80"]),
    ("deployment", "d2", ["deployment", "d2", "--image=busybox", "--", "sleep", "3600"]),
    ("rolebinding", "rb1", ["rolebinding", "rb1", "--clusterrole=view", "--user=u", "--group=g",
                            "--serviceaccount=default:default"]),
    ("clusterrolebinding", "crb1", ["clusterrolebinding", "crb1", "--clusterrole=view", "--user=u"]),
    ("role", "r1", ["role", "r1", "--verb=get", "--verb=list", "--resource=pods", "--resource=deployments.apps",
                    "--resource-name=a"]),
    ("clusterrole", "cr1", ["clusterrole", "cr1", "--verb=get", "--non-resource-url=/logs"]),
    ("clusterrole", "cr2", ["clusterrole", "cr2", "--aggregation-rule=rbac.example.com/aggregate=true"]),
    ("serviceaccount", "sa1", ["serviceaccount", "sa1"]),
]


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        self.env.update({"KUBECONFIG": str(kubeconfig), "HOME": str(home)})

    def __call__(self, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([kubectl_binary(), *args], input=stdin, capture_output=True, text=True,
                              env=self.env, timeout=120)
        if ok:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stderr[-3000:]}"
        return proc


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    tmp = tmp_path_factory.mktemp("kubectl-protobuf")
    (tmp / "bin").write_bytes(BINARY)
    with running_server(tmp) as server:
        assert server.kubeconfig is not None
        yield Kubectl(server.kubeconfig, tmp)


def sent_body(log: str) -> tuple[str, bytes]:
    """The Content-Type and body of the one POST in a ``kubectl -v=9`` log (klog prints the body as a hex dump)."""
    content_type = re.search(r"curl -v -XPOST .*?-H \"Content-Type: ([^\"]+)\"", log)
    dump = re.search(r'"Request Body" body=<\n(.*?)\n\s*>', log, re.DOTALL)
    assert content_type and dump, log[-2000:]
    body = bytearray()
    for row in dump.group(1).splitlines():
        hex_part = row.strip()[8:].split("|", 1)[0]  # offset, 16 bytes in hex, |text|
        body += bytes.fromhex("".join(hex_part.split()))
    return content_type.group(1), bytes(body)


def comparable(obj: dict[str, Any], name: str, twin: str) -> dict[str, Any]:
    """The object without what the server assigns per object (uid, versions, times, allocated IPs and
    ports), the twin's name read as the original's."""
    obj = json.loads(json.dumps(obj).replace(f'"{twin}"', f'"{name}"'))
    meta = obj["metadata"]
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        meta.pop(key, None)
    for entry in meta.get("managedFields") or []:
        entry.pop("time", None)
    spec = obj.get("spec") or {}
    if obj["kind"] == "Service":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    return obj


@pytest.mark.parametrize("resource, name, args", COMMANDS, ids=[" ".join(c[2][:2]) for c in COMMANDS])
def test_kubectl_create_sends_protobuf_and_it_reads_back_as_the_same_json(
        kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory, resource: str, name: str, args: list[str]) -> None:
    home = Path(kubectl.env["HOME"])
    args = [a.replace("{bin}", str(home / "bin")) for a in args]
    cut = args.index("--") if "--" in args else len(args)  # flags go before a container command
    printed = json.loads(kubectl("create", *args[:cut], "--dry-run=client", "-o", "json", *args[cut:]).stdout)

    created = kubectl("create", *args[:cut], "-v=9", *args[cut:])
    content_type, body = sent_body(created.stderr)
    assert content_type == MEDIA_TYPE  # the path under test, not a JSON fallback
    assert decode_object(body) == printed

    # The same object as JSON (kubectl create -f sends JSON), under another name.
    twin = f"{name}-json"
    as_json = json.loads(json.dumps(printed))
    as_json["metadata"]["name"] = twin
    for port in (as_json.get("spec") or {}).get("ports") or []:
        port.pop("nodePort", None)  # K7: one Service's node port; the twin gets one of its own
    kubectl("create", "-f", "-", stdin=json.dumps(as_json))
    both = json.loads(kubectl("get", resource, name, twin, "-o", "json").stdout)["items"]
    assert [o["metadata"]["name"] for o in both] == [name, twin]
    assert comparable(both[0], name, twin) == comparable(both[1], name, twin)
    # Fields kubectl set read back as it set them (a few by name, so a shared mistake would show too).
    stored = both[0]
    for key, value in printed.items():
        if key not in ("metadata", "status") and value is not None:
            assert key in stored, key
    if resource == "deployment" and name == "d1":
        assert stored["spec"]["replicas"] == 0  # a pointer present with zero: kept, not defaulted to 1
    if resource == "secret" and name == "s1":
        assert stored["data"]["bin"] == "AAECgP7/" and stored["data"]["k"] == "dg=="
    if resource == "configmap":
        assert stored["binaryData"] == {"bin": "AAECgP7/"} and stored["data"] == {"a": "b", "empty": ""}
    if resource == "service" and name == "svc1":
        assert [p["targetPort"] for p in stored["spec"]["ports"]] == [8080, "https"]
    if resource == "service" and name == "np1":
        assert stored["spec"]["ports"][0]["nodePort"] == 30080
        twin_port = both[1]["spec"]["ports"][0]["nodePort"]
        assert 30000 <= twin_port <= 32767 and twin_port != 30080


def test_protobuf_bodies_meet_the_same_validation_and_admission(kubectl: Kubectl) -> None:
    """A bad name (422) and a missing namespace (404) are refused with the JSON path's words."""
    for args, words in (
            (["configmap", "Bad_Name", "--from-literal=a=b"],
             'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123'),
            (["configmap", "lost", "--from-literal=a=b", "--namespace=missing"], 'namespaces "missing" not found')):
        refused = kubectl("create", *args, ok=False)
        printed = kubectl("create", *args, "--dry-run=client", "-o", "json").stdout
        as_json = kubectl("create", "-f", "-", stdin=printed, ok=False)
        assert refused.returncode != 0 and as_json.returncode != 0
        assert words in refused.stderr and words in as_json.stderr, (refused.stderr, as_json.stderr)
    assert "Bad_Name" not in kubectl("get", "configmaps", "-o", "name").stdout


def test_create_token_and_auth_reviews_in_protobuf(kubectl: Kubectl) -> None:
    kubectl("create", "serviceaccount", "robot")
    token = kubectl("create", "token", "robot", "--duration=20m", "--audience=api").stdout.strip()
    assert token.count(".") == 2
    assert kubectl("auth", "can-i", "get", "pods").stdout.strip() == "yes"
    assert "admin" in kubectl("auth", "whoami").stdout
