"""StatefulSet bring-up and member recreation through ``stowage up``, against the same work by hand.

(a) Creating a 5-member StatefulSet (OrderedReady) with 1 GiB ext4 local volumes
    (WaitForFirstConsumer class) and an exec readiness probe (``true``, every 1s)
    until ``status.readyReplicas == 5``, against the sum of the raw per-member
    command sequences doing the same work: truncate a sparse 1 GiB file,
    ``losetup --find --show --direct-io=on``, ``mkfs.ext4``, mount, bind mount,
    an overlay of / on a tmpfs, ``runc run -d`` of the same process with the
    same OCI config the agent builds (``storage.agent.runtime.oci``), and
    ``runc exec`` of the readiness command until it succeeds. The StorageClass
    and Service exist before the clock starts (as the raw bundle directories do).
(b) Deleting member 2 (after writing a file on its volume) until a new ``web-2``
    is Running and Ready on the same claim and the file is still there, against
    the raw sequence: stop the container, unmount its bind mount and rootfs,
    mount them again and start and probe the container again.

Every round uses a fresh data dir, stopped with ``stowage down`` and removed.
The figures are medians over ``--rounds`` rounds (3 by default).

usage: python benchmarks/statefulset.py [--rounds 3] [--replicas 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from raw_volume import create_volume, mount_pod_root, run, wait  # noqa: E402
from storage.agent.runtime.hosts import render as render_hosts  # noqa: E402
from storage.agent.runtime.oci import build_config  # noqa: E402
from storage.client import Client  # noqa: E402
from storage.system import loop, mounts  # noqa: E402
from support import clean_host_under, stowage_executable  # noqa: E402

SET, SERVICE, NAMESPACE = "web", "web", "default"
SELECTOR = f"app={SET}"
# Exits promptly on SIGTERM, so a deleted member is gone without waiting for its grace period.
LOOP = "trap 'exit 0' TERM; while true; do sleep 60 & wait $!; done"
READY_COMMAND = ["true"]
MARKER = "written-before-delete"
Obj = dict[str, Any]


# ---- manifests --------------------------------------------------------------------------

def storage_class() -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "bench-local"},
            "provisioner": "stowage.io/local", "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete", "parameters": {"fsType": "ext4"}}


def service() -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
            "spec": {"clusterIP": "None", "selector": {"app": SET}}}


def container() -> Obj:
    return {"name": "main", "image": "debian:12", "command": ["/bin/sh", "-c", LOOP],
            "readinessProbe": {"exec": {"command": READY_COMMAND}, "periodSeconds": 1},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}


def statefulset(replicas: int) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": SET, "namespace": NAMESPACE},
            "spec": {"serviceName": SERVICE, "replicas": replicas, "selector": {"matchLabels": {"app": SET}},
                     "template": {"metadata": {"labels": {"app": SET}},
                                  "spec": {"terminationGracePeriodSeconds": 5, "containers": [container()]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                         "accessModes": ["ReadWriteOnce"], "storageClassName": "bench-local",
                         "resources": {"requests": {"storage": "1Gi"}}}}]}}


def is_ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    return (not pod["metadata"].get("deletionTimestamp") and status.get("phase") == "Running"
            and any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []))


# ---- the system under test ----------------------------------------------------------------

class Up:
    """``stowage up`` on a fresh data dir; ``close`` runs ``stowage down`` and removes the dir."""

    def __init__(self, base: Path, keep_log: Path | None = None, pool_tmpfs: int | None = None) -> None:
        self.base = base
        self.keep_log = keep_log
        self.data_dir = base / "data"
        self.log_path = base / "up.log"
        # The default pool's directory (storage.agent.setup.default_pool) on a tmpfs of this many bytes:
        # its volumes' loop devices then read and write memory, with none of the host disk's noise.
        self.pool_mount: Path | None = None
        if pool_tmpfs is not None:
            self.pool_mount = self.data_dir / "pools" / "default"
            self.pool_mount.mkdir(parents=True)
            run("mount", "-t", "tmpfs", "-o", f"size={pool_tmpfs},mode=0700", "stowage-bench-pool",
                str(self.pool_mount))
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [stowage_executable(), "up", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0",
                     "--log-format", "json"], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
            wait(lambda: self.proc.poll() is None and b'"stowage is ready"' in self.log_path.read_bytes(),
                 f"stowage up to start (log: {self.log_path})", 120, 0.1)
            self.client = Client.from_kubeconfig(self.data_dir / "kubeconfig")
            wait(self._node_ready, "the local node to be Ready", 120, 0.1)
        except BaseException:
            # An up that never came up still leaves its pool's tmpfs, and maybe a process and mounts.
            self._stop()
            raise

    def _node_ready(self) -> bool:
        nodes, _ = self.client.list("nodes")
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for n in nodes for c in (n.get("status") or {}).get("conditions") or [])

    def wait_set_ready(self, replicas: int, timeout: float = 600) -> None:
        """Until the set reports ``readyReplicas == replicas``, woken by a watch (no polling gap)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items, rv = self.client.list("statefulsets", NAMESPACE)
            if any(s["metadata"]["name"] == SET and (s.get("status") or {}).get("readyReplicas") == replicas
                   for s in items):
                return
            for event in self.client.watch("statefulsets", NAMESPACE, resource_version=rv,
                                           timeout=max(1.0, deadline - time.monotonic())):
                obj = event["object"]
                if obj["metadata"]["name"] == SET and (obj.get("status") or {}).get("readyReplicas") == replicas:
                    return
        raise TimeoutError(f"{SET}: readyReplicas != {replicas} after {timeout:.0f}s (log: {self.log_path})")

    def wait_pod(self, name: str, check: Callable[[Obj], bool], timeout: float = 600) -> Obj:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items, rv = self.client.list("pods", NAMESPACE, label_selector=SELECTOR)
            for pod in items:
                if pod["metadata"]["name"] == name and check(pod):
                    return pod
            for event in self.client.watch("pods", NAMESPACE, resource_version=rv, label_selector=SELECTOR,
                                           timeout=max(1.0, deadline - time.monotonic())):
                pod = event["object"]
                if event["type"] != "DELETED" and pod["metadata"]["name"] == name and check(pod):
                    return pod
        raise TimeoutError(f"pod {name} not as wanted after {timeout:.0f}s (log: {self.log_path})")

    def volume_dir(self, pod: Obj) -> Path:
        """The host side of the pod's ``data`` volume (the bind mount the container sees at /data)."""
        return next((self.data_dir / "agent" / "pods" / pod["metadata"]["uid"] / "volumes").glob("*/data"))

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            self._stop()

    def _unmount_pool(self) -> None:
        if self.pool_mount is not None and mounts.is_mount_point(self.pool_mount):
            subprocess.run(["umount", str(self.pool_mount)], capture_output=True, text=True, check=False)

    def _stop(self) -> None:
        if not hasattr(self, "proc"):  # up was never started: only the pool's tmpfs
            self._unmount_pool()
            shutil.rmtree(self.base, ignore_errors=True)
            return
        try:
            if self.proc.poll() is None:
                # Stopping `up` first, then `down` for whatever it leaves running (pods, mounts).
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    print("warning: stowage up did not stop within 120s of SIGTERM")
        finally:
            if self.keep_log is not None:
                shutil.copy(self.log_path, self.keep_log)
            down = subprocess.run([stowage_executable(), "down", "--data-dir", str(self.data_dir), "--grace", "2"],
                                  capture_output=True, text=True, timeout=180)
            if self.proc.poll() is None:  # down signals it; do not leave it behind whatever happened
                self.proc.kill()
            self.proc.wait(timeout=60)
            self._unmount_pool()
            leftovers = mounts.mounts_under(self.base) or loop.loops_under(self.base)
            if down.returncode != 0 or leftovers:
                print(f"warning: stowage down: rc={down.returncode} {down.stderr.strip()} leftovers={leftovers}")
                clean_host_under(self.base)
            shutil.rmtree(self.base, ignore_errors=True)


def stowage_round(base: Path, replicas: int, keep_log: Path | None = None) -> tuple[float, float]:
    up = Up(base, keep_log)
    try:
        up.client.create(storage_class())
        up.client.create(service())
        start = time.perf_counter()
        up.client.create(statefulset(replicas))
        up.wait_set_ready(replicas)
        bring_up = time.perf_counter() - start

        victim = f"{SET}-2"
        old = up.client.get("pods", victim, NAMESPACE)
        volume_before = up.client.get("persistentvolumeclaims", f"data-{victim}", NAMESPACE)["spec"]["volumeName"]
        (up.volume_dir(old) / MARKER).write_text("kept\n")
        start = time.perf_counter()
        up.client.delete("pods", victim, NAMESPACE)
        new = up.wait_pod(victim, lambda p: p["metadata"]["uid"] != old["metadata"]["uid"] and is_ready(p))
        recreate = time.perf_counter() - start
        claims = [v["persistentVolumeClaim"]["claimName"] for v in new["spec"]["volumes"] if v.get("persistentVolumeClaim")]
        assert claims == [f"data-{victim}"], claims
        claim = up.client.get("persistentvolumeclaims", f"data-{victim}", NAMESPACE)
        assert claim["spec"]["volumeName"] == volume_before, "the recreated member got another volume"
        assert (up.volume_dir(new) / MARKER).read_text() == "kept\n", "the file written before the delete is gone"
        return bring_up, recreate
    finally:
        up.close()


# ---- the raw baseline --------------------------------------------------------------------

class RawMember:
    """One member by hand: the agent's commands, one after another, with nothing in between."""

    def __init__(self, base: Path, ordinal: int) -> None:
        self.name = f"{SET}-{ordinal}"
        self.work = base / self.name
        self.image = self.work / "vol.img"
        self.mnt = self.work / "mnt"
        self.volume = self.work / "pod-data"
        self.bundle = self.work / "bundle"
        self.scratch = self.bundle / "scratch"
        self.rootfs = self.bundle / "rootfs"
        self.runc_root = base / "runc"
        self.ip = f"127.1.250.{ordinal + 1}"
        self.id = f"bench-{self.name}"
        self.device = ""
        for d in (self.mnt, self.volume, self.scratch, self.rootfs):
            d.mkdir(parents=True, exist_ok=True)

    def runc(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.runc_root), *args]

    def create_volume(self) -> None:
        self.device = create_volume(self.image, self.mnt)

    def start(self) -> None:
        mount_pod_root(self.mnt, self.volume, self.scratch, self.rootfs, "size=256m,mode=0700")
        pod = {"metadata": {"name": self.name, "namespace": NAMESPACE},
               "spec": {"hostname": self.name, "subdomain": SERVICE, "containers": [container()]}}
        hosts = self.work / "etc-hosts"
        hosts.write_text(render_hosts(pod, self.ip, []))
        config = build_config(pod=pod, container=container(), argv=["/bin/sh", "-c", LOOP],
                              env=[("POD_NAME", self.name)], volumes={"data": str(self.volume)},
                              hostname=self.name, hosts_file=hosts)
        (self.bundle / "config.json").write_text(json.dumps(config))
        with open(self.work / "container.log", "ab") as log:
            subprocess.run(self.runc("run", "-d", "--bundle", str(self.bundle), self.id),
                           check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=120)
        # The readiness condition the agent checks: the probe command succeeds inside the container.
        wait(lambda: subprocess.run(self.runc("exec", self.id, *READY_COMMAND), capture_output=True,
                                    timeout=30).returncode == 0, f"{self.name} ready", 60, 0.0)

    def stop(self) -> None:
        subprocess.run(self.runc("kill", self.id, "TERM"), capture_output=True, timeout=30)
        wait(lambda: (json.loads(run(*self.runc("state", self.id)))["status"] == "stopped"), f"{self.name} stopped", 60, 0.01)
        run(*self.runc("delete", self.id))
        for path in (self.rootfs, self.scratch, self.volume):
            run("umount", str(path))


def raw_round(base: Path, replicas: int) -> tuple[float, float]:
    base.mkdir(parents=True)
    try:
        members = [RawMember(base, i) for i in range(replicas)]  # directories only, like bundle dirs
        start = time.perf_counter()
        for member in members:  # OrderedReady: each member after the previous one is ready
            member.create_volume()
            member.start()
        bring_up = time.perf_counter() - start
        victim = members[2 if replicas > 2 else 0]
        (victim.volume / MARKER).write_text("kept\n")
        start = time.perf_counter()
        victim.stop()
        victim.start()
        recreate = time.perf_counter() - start
        assert (victim.volume / MARKER).read_text() == "kept\n"
        return bring_up, recreate
    finally:
        clean_host_under(base)
        shutil.rmtree(base, ignore_errors=True)


# ---- report ------------------------------------------------------------------------------

def fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--only", choices=("raw", "stowage"), help="measure one side only (no ratio)")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy each round's `stowage up` log here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (loop devices, mounts, runc)")
        return 2
    if args.replicas < 3:
        parser.error("--replicas: must be at least 3 (member 2 is deleted in (b))")
    ours_up: list[float] = []
    ours_re: list[float] = []
    raw_up: list[float] = []
    raw_re: list[float] = []
    for i in range(args.rounds):
        # Alternate which goes first, so neither always runs on a warmer page cache.
        order = ("raw", "stowage") if i % 2 == 0 else ("stowage", "raw")
        for which in order:
            if args.only and which != args.only:
                continue
            base = Path(tempfile.mkdtemp(prefix=f"stowage-bench-sts-{which}-"))
            if which == "raw":
                shutil.rmtree(base)
                up_s, re_s = raw_round(base, args.replicas)
                raw_up.append(up_s)
                raw_re.append(re_s)
            else:
                keep = args.keep_logs / f"up-round{i + 1}.log" if args.keep_logs else None
                up_s, re_s = stowage_round(base, args.replicas, keep)
                ours_up.append(up_s)
                ours_re.append(re_s)
            print(f"round {i + 1} {which:8s}: bring-up {up_s:.3f}s, recreate member 2 {re_s:.3f}s", flush=True)

    if args.only:
        return 0
    med = statistics.median
    print()
    print(f"machine: {os.cpu_count()} CPUs (nproc), kernel {platform.release()}, {platform.machine()}; "
          f"{args.rounds} rounds, medians")
    header = f"{'measure':58s} {'stowage':>9s} {'raw':>9s} {'ratio':>7s}  runs (stowage | raw)"
    print(header)
    print("-" * len(header))
    rows = [
        (f"(a) {args.replicas}-member set, 1Gi ext4 each, apply -> {args.replicas} Ready", ours_up, raw_up),
        ("(b) delete member 2 -> Running+Ready, same claim and data", ours_re, raw_re),
    ]
    for label, ours, raw in rows:
        print(f"{label:58s} {med(ours):8.3f}s {med(raw):8.3f}s {med(ours) / med(raw):6.2f}x  "
              f"{fmt(ours)} | {fmt(raw)}")
    print(f"aim for (a): <= 1.3x; per member: stowage {med(ours_up) / args.replicas:.3f}s, "
          f"raw {med(raw_up) / args.replicas:.3f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
