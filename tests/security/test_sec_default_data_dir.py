"""Issue 8, (c) through ``stowage up`` itself: with the data dir in its default place (~/.stowage,
HOME pointing at a temp dir on the host's own disk), a default pod sees neither the kubeconfig,
tokens.csv, the store nor the pool images, and a pod with SYS_ADMIN cannot unmask them."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

from sec_harness import ATTACK
from storage.client import Client
from storage.errors import NotFound, StowageError
from support import UpProcess, cleanup_tree, need_programs, need_root, stowage_executable, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def home() -> Iterator[Path]:
    need_root("pods run in runc containers on loop-backed volumes")
    need_programs("runc", "losetup", "mkfs.ext4")
    # Under /var/tmp: on the host's own disk, outside the /tmp that every pod gets as its own tmpfs.
    base = Path(tempfile.mkdtemp(prefix="stowage-sec-home-", dir="/var/tmp"))
    try:
        yield base
    finally:
        cleanup_tree(base)


def _pod(name: str, checks: dict[str, Any], caps: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "debian:12",
                                     "command": ["python3", "-c", ATTACK, json.dumps(checks)],
                                     "securityContext": {"capabilities": {"add": caps}} if caps else {}}]}}


def test_sec_default_place_data_dir_is_invisible_to_pods(home):
    env = dict(os.environ)
    for name in ("KUBECONFIG", "STOWAGE_DATA_DIR"):
        env.pop(name, None)
    env["HOME"] = str(home)
    data = home / ".stowage"
    up = UpProcess("up", ["--listen", "127.0.0.1:0"], env, new_session=True)
    try:
        ready = up.wait_for("stowage is ready")
        client = Client.from_kubeconfig(Path(ready["kubeconfig"]))
        secrets = [p for p in (data / "tokens.csv", data / "kubeconfig", data / "stowage.db") if p.exists()]
        assert data / "tokens.csv" in secrets and Path(ready["kubeconfig"]).resolve().parent == data.resolve(), \
            "the data dir is in its default place"
        pools = [p for p in data.rglob("pools") if p.is_dir()]
        checks = {"umount": ["/tmp", str(data), str(data / "agent")],
                  "list": [str(data), *map(str, pools)], "read": [str(p) for p in secrets]}
        # SYS_ADMIN is beyond Pod Security's baseline: the attacker is granted a privileged namespace.
        default_ns = client.get("namespaces", "default")
        default_ns["metadata"].setdefault("labels", {})["pod-security.kubernetes.io/enforce"] = "privileged"
        client.update(default_ns)
        for name, caps in (("plain", []), ("admin", ["SYS_ADMIN"])):
            client.create(_pod(name, checks, caps))

        def finished(name: str) -> dict[str, Any] | None:
            pod = client.get("pods", name, "default")
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            return pod if statuses and "terminated" in (statuses[0].get("state") or {}) else None

        for name in ("plain", "admin"):
            wait_for(lambda: finished(name), f"pod {name} to finish", 120, interval=0.2,
                     retry_on=(NotFound, StowageError, OSError))
            text = b"".join(client.logs(name, "default")).decode()
            line = next((x for x in text.splitlines() if x.startswith("RESULT ")), None)
            assert line is not None, f"pod {name} printed no result: {text}"
            found = json.loads(line[len("RESULT "):])
            token = (data / "tokens.csv").read_text().split(",")[0]
            assert token not in text, f"pod {name} read the admin token"
            for path in secrets:
                assert found[f"read {path}"].startswith("error"), (name, path, found[f"read {path}"])
            assert found[f"list {data}"] in ([], "error 2"), (name, found[f"list {data}"])
    finally:
        code = None
        try:
            code = up.stop(60)
        except subprocess.TimeoutExpired:
            up.kill()
        down = subprocess.run([stowage_executable(), "down", "--data-dir", str(data), "--grace", "5"],
                              capture_output=True, text=True, timeout=120, env=env)
        assert code == 0 and down.returncode == 0, f"up exit {code}; down: {down.stderr}"
