"""One throw-away Ceph cluster (monitor, manager, in-memory OSD, MDS) per test session, started with
the same script a user runs to try examples/ceph, and always stopped (FUSE mounts first)."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "examples" / "ceph" / "start-cluster.sh"
REQUIRED_TOOLS = ("ceph-mon", "ceph-osd", "ceph-mgr", "ceph-mds", "ceph", "rbd", "rbd-fuse", "ceph-fuse")


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


@dataclass
class CephCluster:
    directory: Path
    fsid: str
    monitors: str  # "127.0.0.1:PORT"
    conf: Path  # admin ceph.conf
    admin_keyring: Path
    admin_key: str = field(repr=False)

    def ceph(self, *args: str, timeout: float = 60) -> str:
        """Run a ``ceph`` admin command and return its stdout."""
        return subprocess.run(["ceph", "-c", str(self.conf), *args], check=True, capture_output=True, text=True,
                              timeout=timeout).stdout

    def loopback_ports(self) -> list[int]:
        """Every 127.0.0.1 port the daemons advertise (monitor, manager, OSD, MDS): the ones a client
        elsewhere must reach, since the maps it is handed name these addresses."""
        ports: set[int] = set()

        def collect(node: object) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "addr" and isinstance(value, str) and value.startswith("127.0.0.1:"):
                        ports.add(int(value.split(":", 1)[1].split("/", 1)[0]))  # "127.0.0.1:PORT/NONCE" too
                    else:
                        collect(value)
            elif isinstance(node, list):
                for item in node:
                    collect(item)

        for dump in (("mon", "dump"), ("mgr", "dump"), ("osd", "dump"), ("fs", "dump")):
            collect(json.loads(self.ceph(*dump, "--format", "json")))
        ports.discard(0)
        return sorted(ports)

    def rbd(self, *args: str, timeout: float = 60) -> str:
        return subprocess.run(["rbd", "-c", str(self.conf), *args], check=True, capture_output=True, text=True,
                              timeout=timeout).stdout


def start(base: Path | None = None) -> CephCluster:
    directory = Path(tempfile.mkdtemp(prefix="stowage-ceph-cluster-", dir=base))
    try:
        out = subprocess.run(["bash", str(SCRIPT), "start", str(directory)], check=True, capture_output=True,
                             text=True, timeout=300).stdout  # the script's own deadline (180 s) comes first
    except subprocess.CalledProcessError as exc:
        stop_directory(directory)
        raise RuntimeError(f"starting the test Ceph cluster failed: {exc.stderr.strip()[-2000:]}") from None
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    keyring = Path(values["ADMIN_KEYRING"])
    key = subprocess.run(["ceph-authtool", "-p", str(keyring), "-n", "client.admin"], check=True,
                         capture_output=True, text=True).stdout.strip()
    return CephCluster(directory=directory, fsid=values["FSID"], monitors=values["MONITORS"],
                       conf=Path(values["CONF"]), admin_keyring=keyring, admin_key=key)


def _fuse_mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2].startswith("fuse") and parts[1].startswith(prefixes):
                found.append(parts[1].replace("\\040", " "))
    return found


def stop_directory(directory: Path) -> None:
    # A ceph-fuse or rbd-fuse whose cluster died can hang: unmount (lazily if it must) before the daemons go.
    for mount in reversed(_fuse_mounts_under((str(directory),))):
        if subprocess.run(["umount", mount], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
    subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], capture_output=True, timeout=60)
    shutil.rmtree(directory, ignore_errors=True)


def stop(cluster: CephCluster) -> None:
    stop_directory(cluster.directory)
