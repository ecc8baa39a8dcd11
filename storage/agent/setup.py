"""Building a node agent from command-line settings (shared by ``stowage agent`` and ``stowage up``)."""
from __future__ import annotations

import re
import shutil
import socket
import threading
from pathlib import Path

import structlog

from storage.agent.agent import AgentConfig, NodeAgent, PoolSpec
from storage.api.quantity import parse_quantity
from storage.client import Client
from storage.system.dirlock import DirLock

log = structlog.get_logger(__name__)

DEFAULT_POOL_CAPACITY = 20 * (1 << 30)


def default_node_name() -> str:
    """The host name as a DNS-1123 label, as the kubelet registers it."""
    name = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return name or "node-1"


def parse_pool(value: str, data_dir: Path) -> PoolSpec:
    """``NAME=PATH[:SIZE]`` (SIZE a quantity such as ``50Gi``); PATH may be relative to the data dir."""
    name, sep, rest = value.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f'--pool: Invalid value: "{value}": expected NAME=PATH[:SIZE], e.g. fast=/mnt/ssd:100Gi')
    path_text, _, size_text = rest.partition(":")
    path = Path(path_text)
    if not path.is_absolute():
        path = data_dir / path
    capacity = None
    if size_text:
        try:
            capacity = int(parse_quantity(size_text))
        except ValueError as exc:
            raise ValueError(f'--pool: Invalid value: "{size_text}": {exc}') from None
    return PoolSpec(name=name, path=path, capacity=capacity)


def default_pool(data_dir: Path) -> PoolSpec:
    """A pool under the data dir, handing out at most 20Gi and never more than 90% of the free space."""
    path = data_dir / "pools" / "default"
    path.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path).free
    return PoolSpec(name="default", path=path, capacity=min(DEFAULT_POOL_CAPACITY, int(free * 0.9)))


def start_agent(client: Client, config: AgentConfig, token: str | None, stop: threading.Event) -> threading.Thread:
    """Start the agent; DirLocked when another agent already runs on ``config.data_dir``.

    Two agents on one directory would fight over its mounts, containers and loop devices, so the
    directory's lock is taken before anything is touched and held until the agent has stopped.
    """
    lock = DirLock(config.data_dir, "stowage agent").acquire()
    try:
        agent = NodeAgent(client, config, token=token)
        agent.start()
    except BaseException:
        lock.release()
        raise

    def wait() -> None:
        stop.wait()
        try:
            agent.stop()
        finally:
            lock.release()

    thread = threading.Thread(target=wait, name="agent", daemon=True)
    thread.start()
    return thread
