"""The node agent's memory: what its start-up path imports (PF41) and its threads per pod (PF43)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from storage.agent.sa_tokens import ServiceAccountTokenManager

REPO = Path(__file__).resolve().parents[3]

# Everything `stowage agent` imports before its first pod, then what it runs for a node with no CSI
# driver: the plugin registry, the registration socket watcher's scan and the node's CSI registration.
AGENT_PATH = r"""
import json, sys, tempfile, threading
from pathlib import Path

import click

from storage.cli.main import cli  # the `stowage` entry point, as `stowage agent` loads it
assert cli.get_command(click.Context(cli), "agent").name == "agent"
from storage.agent.agent import NodeAgent
from storage.agent.credentials import node_credentials
from storage.agent.plugin_watcher import PluginWatcher
from storage.agent.server import build_app
from storage.agent.setup import start_agent
from volume_plugins.csi import node_registration, register_node_driver, unregister_node_driver
from volume_plugins.registry import default_registry

registry = default_registry()
assert registry.by_name("kubernetes.io/csi") is not None, "the CSI plugin is registered without importing grpc"
with tempfile.TemporaryDirectory() as d:
    watcher = PluginWatcher(Path(d), threading.Event(), lambda: None, register_node_driver, unregister_node_driver)
    assert watcher.scan() is False
assert node_registration() == ({}, {}, [])
from storage.agent.resolve import pod_with_service_env  # a pod's sync: its Services' variables
pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
svc = {"metadata": {"name": "db"}, "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 5432}]}}
env = pod_with_service_env(pod, [svc], {})["spec"]["containers"][0]["env"]
assert {"name": "DB_SERVICE_HOST", "value": "10.0.0.1"} in env
from storage.api.quantity import parse_quantity
assert parse_quantity("16Mi") == 16 << 20
print(json.dumps(sorted(sys.modules)))
"""

# Never needed by an agent before a volume of theirs appears (the cloud SDKs belong to the
# provisioners and backups in the control plane; grpc to a CSI driver's first registration; pydantic
# and the store to the API server and controllers).
HEAVY = ("grpc", "google.protobuf", "google.cloud", "boto3", "botocore", "azure", "sqlalchemy", "matplotlib",
         "numpy", "moto", "pydantic", "pydantic_core", "storage.store", "storage.controllers.base",
         "storage.apiserver", "storage.cli.write_commands", "storage.cli.read_commands", "storage.cli.bench",
         "storage.cli.backup_commands", "statefulset")


def test_agent_start_path_does_not_import_grpc_or_cloud_sdks() -> None:
    """PF41, PF42: an agent with no CSI driver and no cloud volume imports none of the heavy client libraries,
    neither at start nor when it syncs a pod."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", AGENT_PATH], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert loaded == [], f"the agent's start-up path imports {loaded[:10]}"
    assert "storage.agent.agent" in modules  # the probe really walked the agent's path


# The agent's process after start-up, then a logged exception through the console renderer.
AGENT_LOGS = AGENT_PATH.replace("print(json.dumps(sorted(sys.modules)))", """
import httpx
httpx.Client().close()  # a client's transport imports httpcore, and httpcore trio where it is installed
import structlog
from storage.cli.up import configure_logging
configure_logging("console")
try:
    raise ValueError("boom")
except ValueError:
    structlog.get_logger().exception("sync.failed")
print(json.dumps(sorted(m for m, v in sys.modules.items() if v is not None)))
""")


def _modules_and_log(*argv: str) -> tuple[list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", AGENT_LOGS, *argv], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_agent_process_leaves_out_rich_and_pygments() -> None:
    """PF60, PF96: under `stowage agent`, httpx's and structlog's optional rich and pygments, httpcore's trio
    and uvicorn's watchfiles are not loaded (where installed), and an exception is still logged whole
    (structlog's plain traceback); other commands keep rich (bench)."""
    modules, log = _modules_and_log("agent")
    assert [m for m in modules if m.split(".")[0] in ("rich", "pygments", "trio", "watchfiles")] == []
    assert {"httpx", "httpcore", "structlog", "uvicorn", "uvicorn.supervisors"} <= set(modules)
    assert "sync.failed" in log and "Traceback (most recent call last)" in log and "ValueError: boom" in log
    modules, log = _modules_and_log("bench")
    assert "rich" in modules and "ValueError: boom" in log

def test_every_command_resolves_by_its_name() -> None:
    """PF46: the lazily loaded commands are all reachable, each under its own name."""
    import click

    from storage.cli.main import COMMANDS, cli

    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
    assert cli.get_command(ctx, "no-such-command") is None


def test_csi_names_still_reachable_lazily() -> None:
    """PF41: storage.system.csi keeps its public names; they load the gRPC client when first used."""
    import storage.system.csi as csi
    from storage.system.csi.client import ANN_NODE_IDS, CsiClient, CsiError
    from storage.system.csi.names import ANN_NODE_IDS as ann

    assert csi.CsiClient is CsiClient and csi.CsiError is CsiError
    assert ANN_NODE_IDS == ann == "csi.volume.kubernetes.io/nodeid"


class _Response:
    status_code = 201

    def json(self) -> dict[str, Any]:
        return {"status": {"token": "t", "expirationTimestamp": None}}


class _Client:
    class http:  # noqa: N801 - the attribute the manager calls
        @staticmethod
        def post(path: str, json: dict[str, Any]) -> _Response:
            return _Response()


def _pod(uid: str) -> dict[str, Any]:
    return {"metadata": {"name": uid, "namespace": "ns", "uid": uid}, "spec": {}}


def test_token_refreshes_of_many_pods_share_one_thread() -> None:
    """PF43: 50 pods with projected tokens add one refresher thread, not a timer thread each; refreshes
    still fire at their time, and a forgotten pod's refresh does not."""
    refreshed: list[str] = []
    done = threading.Event()

    def on_refresh(uid: str) -> None:
        refreshed.append(uid)
        if len(refreshed) == 49:
            done.set()

    manager = ServiceAccountTokenManager(_Client(), on_refresh)
    before = threading.active_count()
    try:
        # expiration 1 s: refresh at 80% of it, so all come due within a second.
        for i in range(50):
            manager.token(_pod(f"u{i}"), "", 1)
        assert threading.active_count() - before <= 1
        manager.forget("u7")
        assert done.wait(10), f"only {len(refreshed)} refreshes"
        time.sleep(0.3)
        assert sorted(refreshed) == sorted(f"u{i}" for i in range(50) if i != 7)
    finally:
        manager.stop()
    assert threading.active_count() <= before


TRIM_PROBE = r"""
import os
from storage.system import memory

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) // 1024

base = rss()
blocks = [bytearray(4000) for _ in range(20000)]  # ~80 MiB of malloc'd (not pymalloc) blocks
keeper = bytearray(4000)  # above them in the heap: freeing the blocks leaves a hole, not a free top
del blocks
held = rss()
released = memory.trim()
print(base, held, rss(), released)
"""


def test_trim_hands_freed_heap_pages_back() -> None:
    """PF45: after a burst's memory is freed, memory.trim() returns its pages to the kernel."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    base, held, after, released = out.stdout.split()
    assert int(held) - int(base) > 60, "the probe's freed blocks stay resident until trimmed"
    assert released == "True" and int(held) - int(after) > 50


def test_arena_cap_leaves_an_explicit_setting_alone() -> None:
    """PF44: MALLOC_ARENA_MAX in the environment wins over the agent's own cap."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    probe = "from storage.system import memory; print(memory.limit_arenas())"
    capped = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in env.items() if k != "MALLOC_ARENA_MAX"})
    explicit = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                              env={**env, "MALLOC_ARENA_MAX": "4"})
    assert (capped.stdout.strip(), explicit.stdout.strip()) == ("True", "False")


def test_agent_trims_once_after_syncs_settle(monkeypatch: Any) -> None:
    """PF45: the heap is trimmed once pod syncs have stopped for TRIM_AFTER_IDLE, not while pods are in
    flight, and not again until another sync ran."""
    import types

    from storage.agent import agent as agent_module
    from storage.system import memory

    trims: list[float] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(time.monotonic()) or True)
    state = types.SimpleNamespace(_lock=threading.Condition(), _in_flight=set(), _dirty=set(), _last_trim=0.0,
                                  _last_sync=time.monotonic())
    settle = agent_module.NodeAgent._trim_when_settled
    settle(state)
    assert trims == []  # the last sync ended just now
    state._last_sync -= agent_module.TRIM_AFTER_IDLE + 1
    state._in_flight.add("u1")
    settle(state)
    assert trims == []  # a pod is still being synced
    state._in_flight.clear()
    settle(state)
    settle(state)
    assert len(trims) == 1
    state._last_trim = time.monotonic() - agent_module.TRIM_AFTER_IDLE - 10  # as if that trim was a while ago,
    state._last_sync = time.monotonic() - agent_module.TRIM_AFTER_IDLE - 0.5  # another sync ran since, settled
    settle(state)
    assert len(trims) == 2
