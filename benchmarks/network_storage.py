"""Ceph RBD and CephFS through Stowage against the bare commands, on one throw-away cluster in one run.

Claim to Running pod (each round, bare and Stowage alternate so drift hits both alike):
  RBD bare:     rbd create, rbd-fuse -r IMAGE, losetup, mkfs.ext4, mount, bind into the pod's
                directory, a runc container (overlay of / on a tmpfs, as the agent's runtime
                builds it) running a shell.
  RBD Stowage:  a claim of a ``kubernetes.io/rbd`` class (monitors + admin/user Secrets, as a
                Kubernetes in-tree class) and a pod using it, until the pod is Running.
  CephFS bare:  ceph fs subvolume create --size, getpath, subvolume authorize (a per-volume user,
                as the provisioner makes), ceph-fuse -r PATH, bind, the same runc container.
  CephFS Stowage: a claim of a ``cephfs.csi.ceph.com`` class (clusterID through ceph-csi's
                ConfigMap, provisioner and node-stage Secrets) and a pod, until Running.
Aim: Stowage at most 1.3x the bare sequence (ratio of medians).

Throughput: the same fio jobs (sequential 1 MiB writes, random 4 KiB writes; psync, end_fsync)
run on the bare mount and inside a pod on a Stowage volume of each kind. Aim: within 5%.

The cluster (monitor, manager, in-memory OSD, MDS) is examples/ceph/start-cluster.sh's; the
control plane (API server on SQLite, controllers) runs in this process and the node agent as its own
``stowage agent`` process. Everything is removed afterwards, also on failure.

usage: python benchmarks/network_storage.py [--rounds 3] [--fio-size 128M] [--fio-runtime 8] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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
sys.path.insert(0, str(REPO / "tests" / "integration" / "ceph"))

import ceph_service  # noqa: E402
from cluster import LOOP, BenchCluster, quiet_logs, running, secret  # noqa: E402
from raw_volume import mount_pod_root, run, runc_bundle, wait  # noqa: E402
from support import cleanup_tree  # noqa: E402

NS = "default"
POOL = "rbd"
FS = "cephfs"


def fio_jobs(size: str, runtime: int) -> dict[str, list[str]]:
    common = ["--ioengine=psync", "--end_fsync=1", "--output-format=json", f"--size={size}"]
    return {
        "seq-write-1m": ["--name=seq", "--rw=write", "--bs=1M", *common],
        "rand-write-4k": ["--name=rand", "--rw=randwrite", "--bs=4k", "--time_based", f"--runtime={runtime}", *common],
    }


def fio_bandwidth(report: dict[str, Any]) -> float:
    """Write bandwidth in MiB/s of a fio JSON report."""
    return sum(job["write"]["bw_bytes"] for job in report["jobs"]) / (1 << 20)


def run_fio(directory: Path, jobs: dict[str, list[str]]) -> dict[str, float]:
    result = {}
    for name, argv in jobs.items():
        target = directory / f"fio-{name}.dat"
        out = run("fio", f"--filename={target}", *argv)
        result[name] = fio_bandwidth(json.loads(out))
        target.unlink(missing_ok=True)
    return result


# ---- the bare commands ---------------------------------------------------------------------

class Bare:
    def __init__(self, base: Path, cluster: ceph_service.CephCluster) -> None:
        self.base = base
        self.cluster = cluster
        self.conf = str(cluster.conf)
        self.cleanups: list[Callable[[], None]] = []

    def _container(self, work: Path, volume: Path, name: str) -> None:
        (work / "bundle").mkdir(parents=True)
        bind, scratch, rootfs = work / "pod-data", work / "scratch", work / "bundle" / "rootfs"
        for d in (bind, scratch, rootfs):
            d.mkdir(parents=True, exist_ok=True)
        runc_bundle(work / "bundle", rootfs, bind, LOOP)
        self._prepared = (work, volume, bind, scratch, rootfs, name)

    def _start_container(self) -> None:
        work, volume, bind, scratch, rootfs, name = self._prepared
        mount_pod_root(volume, bind, scratch, rootfs)
        self.cleanups.append(lambda: [subprocess.run(["umount", str(d)], capture_output=True) for d in (rootfs, scratch, bind)])
        root = work / "runc"
        subprocess.run(["runc", "--root", str(root), "run", "-d", "--bundle", str(work / "bundle"), name],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: json.loads(run("runc", "--root", str(root), "state", name))["status"] == "running", "bare container")
        self.cleanups.append(lambda: subprocess.run(["runc", "--root", str(root), "delete", "--force", name],
                                                    capture_output=True))

    def rbd(self, i: int) -> tuple[float, Path]:
        work = self.base / f"rbd{i}"
        fuse, mnt = work / "fuse", work / "mnt"
        for d in (fuse, mnt):
            d.mkdir(parents=True)
        image = f"bare-{i}"
        self._container(work, mnt, f"rbd{i}")
        start = time.perf_counter()
        run("rbd", "-c", self.conf, "create", f"{POOL}/{image}", "--size", "1024", "--image-feature", "layering")
        run("rbd-fuse", "-c", self.conf, "-p", POOL, "-r", image, str(fuse))
        self.cleanups.append(lambda: run("rbd", "-c", self.conf, "rm", f"{POOL}/{image}"))
        self.cleanups.append(lambda: subprocess.run(["umount", str(fuse)], capture_output=True))
        device = run("losetup", "--find", "--show", str(fuse / image))
        self.cleanups.append(lambda: subprocess.run(["losetup", "-d", device], capture_output=True))
        run("mkfs.ext4", "-q", device)
        run("mount", device, str(mnt))
        self.cleanups.append(lambda: subprocess.run(["umount", "-R", str(mnt)], capture_output=True))
        self._start_container()
        return time.perf_counter() - start, mnt

    def cephfs(self, i: int) -> tuple[float, Path]:
        work = self.base / f"cephfs{i}"
        mnt = work / "mnt"
        mnt.mkdir(parents=True)
        sub, user = f"bare-{i}", f"bare-user-{i}"
        self._container(work, mnt, f"cephfs{i}")
        start = time.perf_counter()
        run("ceph", "-c", self.conf, "fs", "subvolume", "create", FS, sub, "--size", str(1 << 30), "--group_name", "csi")
        path = run("ceph", "-c", self.conf, "fs", "subvolume", "getpath", FS, sub, "--group_name", "csi")
        run("ceph", "-c", self.conf, "fs", "subvolume", "authorize", FS, sub, user, "--group_name", "csi",
            "--access_level", "rw")
        key = run("ceph", "-c", self.conf, "auth", "get-key", f"client.{user}")  # Pacific's authorize prints nothing
        keyring = work / "keyring"
        keyring.write_text(f"[client.{user}]\n\tkey = {key}\n")
        run("ceph-fuse", "-c", self.conf, "--id", user, "-k", str(keyring), "-r", path, str(mnt))
        self.cleanups.append(lambda: run("ceph", "-c", self.conf, "fs", "subvolume", "rm", FS, sub, "--group_name", "csi"))
        self.cleanups.append(lambda: run("ceph", "-c", self.conf, "auth", "rm", f"client.{user}"))
        self.cleanups.append(lambda: subprocess.run(["umount", "-R", str(mnt)], capture_output=True))
        self._start_container()
        return time.perf_counter() - start, mnt

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # keep cleaning
                print(f"cleanup: {exc}", file=sys.stderr)
        self.cleanups.clear()


# ---- Stowage -------------------------------------------------------------------------------

class Cluster(BenchCluster):
    """The cluster with Ceph's Secrets, ceph-csi's cluster map and an RBD and a CephFS class."""

    def __init__(self, base: Path, ceph: ceph_service.CephCluster) -> None:
        super().__init__(base)
        key = ceph.admin_key
        self.client.create(secret("ceph-admin", {"key": key}, "kubernetes.io/rbd"))
        self.client.create(secret("ceph-user", {"key": key}, "kubernetes.io/rbd"))
        self.client.create(secret("csi-cephfs", {"adminID": "admin", "adminKey": key, "userID": "admin", "userKey": key}))
        self.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "ceph-csi-config", "namespace": "kube-system"},
                            "data": {"config.json": json.dumps([{"clusterID": ceph.fsid, "monitors": [ceph.monitors],
                                                                 "cephFS": {"subvolumeGroup": "csi"}}])}})
        self.client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "rbd"},
                            "provisioner": "kubernetes.io/rbd", "reclaimPolicy": "Delete",
                            "parameters": {"monitors": ceph.monitors, "pool": POOL, "adminId": "admin",
                                           "adminSecretName": "ceph-admin", "adminSecretNamespace": NS,
                                           "userId": "admin", "userSecretName": "ceph-user", "userSecretNamespace": NS,
                                           "imageFormat": "2", "imageFeatures": "layering", "fsType": "ext4"}})
        self.client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "cephfs"},
                            "provisioner": "cephfs.csi.ceph.com", "reclaimPolicy": "Delete",
                            "parameters": {"clusterID": ceph.fsid, "fsName": FS,
                                           "csi.storage.k8s.io/provisioner-secret-name": "csi-cephfs",
                                           "csi.storage.k8s.io/provisioner-secret-namespace": NS,
                                           "csi.storage.k8s.io/node-stage-secret-name": "csi-cephfs",
                                           "csi.storage.k8s.io/node-stage-secret-namespace": NS}})

    def running_time(self, name: str, class_name: str, modes: list[str]) -> float:
        return self.seconds_to_running(name, class_name, modes=modes, namespace=NS)

    def fio_in_pod(self, name: str, class_name: str, modes: list[str], jobs: dict[str, list[str]]) -> dict[str, float]:
        script = " && ".join(f"fio --filename=/data/fio-{job}.dat {' '.join(argv)} --output=/data/{job}.json"
                             f" && rm -f /data/fio-{job}.dat" for job, argv in jobs.items())
        self.claim_and_pod(name, class_name, modes=modes, command=f"{script} && touch /data/done; {LOOP}", namespace=NS)
        wait(lambda: running(self.client.get("pods", name, NS)), "fio pod", 300)
        volume = self.pod_volume(name, NS)
        wait(lambda: (volume / "done").exists(), "fio inside the pod", 900, 0.2)
        return {job: fio_bandwidth(json.loads((volume / f"{job}.json").read_text())) for job in jobs}

    def delete_all(self, namespace: str = NS, timeout: float = 600) -> None:
        super().delete_all(namespace, timeout)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fio-size", default="128M")
    parser.add_argument("--fio-runtime", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    # The control plane runs in this process: its request log would drown the figures.
    quiet_logs()
    if os.geteuid() != 0:
        print("needs root (loop devices, FUSE, mounts, runc)")
        return 2
    missing = ceph_service.missing_tools()
    if missing:
        print(f"Ceph tools missing ({', '.join(missing)}): run scripts/setup.sh")
        return 2
    base = Path(tempfile.mkdtemp(prefix="stowage-bench-net-"))
    ceph = ceph_service.start(base)
    run("ceph", "-c", str(ceph.conf), "osd", "pool", "create", POOL, "8")
    run("rbd", "-c", str(ceph.conf), "pool", "init", POOL)
    run("ceph", "-c", str(ceph.conf), "fs", "subvolumegroup", "create", FS, "csi")
    bare = Bare(base / "bare", ceph)
    cluster: Cluster | None = None
    jobs = fio_jobs(args.fio_size, args.fio_runtime)
    results: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}",
                               "rounds": args.rounds, "fio": {"size": args.fio_size, "runtime": args.fio_runtime}}
    try:
        cluster = Cluster(base / "cluster", ceph)
        cluster.start_agent()
        # One of each before timing: imports, the first pool/fs handles, page cache of the tools.
        cluster.running_time("warm-rbd", "rbd", ["ReadWriteOnce"])
        cluster.running_time("warm-cephfs", "cephfs", ["ReadWriteMany"])
        cluster.delete_all()
        times: dict[str, list[float]] = {"rbd-bare": [], "rbd-stowage": [], "cephfs-bare": [], "cephfs-stowage": []}
        for i in range(args.rounds):
            times["rbd-bare"].append(bare.rbd(i)[0])
            times["rbd-stowage"].append(cluster.running_time(f"rbd-{i}", "rbd", ["ReadWriteOnce"]))
            times["cephfs-bare"].append(bare.cephfs(i)[0])
            times["cephfs-stowage"].append(cluster.running_time(f"cephfs-{i}", "cephfs", ["ReadWriteMany"]))
            bare.close()
            cluster.delete_all()
        results["times"] = times
        for kind in ("rbd", "cephfs"):
            b, s = statistics.median(times[f"{kind}-bare"]), statistics.median(times[f"{kind}-stowage"])
            results[f"{kind}-ratio"] = s / b
            print(f"{kind}: claim to Running pod, stowage median {s:.3f}s ({', '.join(f'{t:.3f}' for t in times[f'{kind}-stowage'])});"
                  f" bare commands median {b:.3f}s ({', '.join(f'{t:.3f}' for t in times[f'{kind}-bare'])});"
                  f" ratio {s / b:.2f}x (aim <= 1.3x)", flush=True)
        throughput: dict[str, dict[str, float]] = {}
        _, rbd_mount = bare.rbd(100)
        throughput["rbd-bare"] = run_fio(rbd_mount, jobs)
        throughput["rbd-pod"] = cluster.fio_in_pod("fio-rbd", "rbd", ["ReadWriteOnce"], jobs)
        _, cephfs_mount = bare.cephfs(100)
        throughput["cephfs-bare"] = run_fio(cephfs_mount, jobs)
        throughput["cephfs-pod"] = cluster.fio_in_pod("fio-cephfs", "cephfs", ["ReadWriteMany"], jobs)
        bare.close()
        cluster.delete_all()
        results["throughput_mib_s"] = throughput
        for kind in ("rbd", "cephfs"):
            for job in jobs:
                b, p = throughput[f"{kind}-bare"][job], throughput[f"{kind}-pod"][job]
                print(f"{kind} {job}: bare mount {b:.1f} MiB/s, in the pod {p:.1f} MiB/s, pod/bare {p / b:.3f}"
                      f" (aim within 5%)", flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))
        return 0
    finally:
        bare.close()
        if cluster is not None:
            try:
                cluster.delete_all()
            except Exception as exc:
                print(f"cleanup: {exc}", file=sys.stderr)
            cluster.close()
        ceph_service.stop(ceph)
        cleanup_tree(base)


if __name__ == "__main__":
    raise SystemExit(main())
