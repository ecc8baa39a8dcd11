"""Claims through a CSI driver under Stowage against calling the driver's gRPC methods directly, in one run.

The driver is the small CSI driver written for the tests (tests/integration/csi/csi_test_driver.py:
directories, real bind mounts), because the Kubernetes hostpath driver cannot be built here (the Go
module proxy refuses github.com/kubernetes-csi/csi-driver-host-path). One driver process serves both.

  Stowage: ``stowage up --csi-driver NAME=unix:///...``; a WaitForFirstConsumer class naming the
           driver, N claims and N pods (one claim each) created at once; time until all N pods are
           Running.
  Direct:  the same driver calls in the same order, N times (CreateVolume, NodeStageVolume,
           NodePublishVolume), each followed by the same kind of container a pod gets (runc, an
           overlay of / on a tmpfs, the published directory bound at /data), one after another.
           The gRPC-only time (no containers) is printed as well, and, to read the ratio, the time
           Stowage takes for the same pods with an emptyDir instead of a CSI claim.
Aim: Stowage at most 1.3x the direct sequence with containers.

usage: python benchmarks/csi.py [--count 100] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "integration" / "csi"))

from csi_drivers import TEST_NAME, start_test_driver, stop_driver, unmount_under  # noqa: E402
from raw_volume import run, wait  # noqa: E402
from storage.client import Client  # noqa: E402
from storage.system.csi import CsiClient  # noqa: E402
from storage.system.csi.client import volume_capability  # noqa: E402
from support import UpProcess, cleanup_tree  # noqa: E402

LOOP = "trap 'exit 0' TERM; while true; do sleep 60 & wait $!; done"
SIZE = 16 << 20


class Direct:
    def __init__(self, base: Path, endpoint: str) -> None:
        self.base = base
        self.client = CsiClient(endpoint)
        self.cleanups: list[Callable[[], None]] = []
        self.template: dict[str, Any] | None = None

    def _config(self) -> dict[str, Any]:
        if self.template is None:
            spec_dir = self.base / "spec"
            spec_dir.mkdir(parents=True)
            run("runc", "spec", "--bundle", str(spec_dir))  # prepared once, as an image would be
            self.template = json.loads((spec_dir / "config.json").read_text())
        return json.loads(json.dumps(self.template))

    def one(self, i: int, containers: bool) -> None:
        work = self.base / f"v{i}-{'c' if containers else 'g'}"
        stage, pod = work / "stage", work / "pod"
        for d in (stage, pod):
            d.mkdir(parents=True)
        cap = volume_capability()
        vol = self.client.create_volume(f"direct-{i}-{containers}", required_bytes=SIZE)
        self.cleanups.append(lambda: self.client.delete_volume(vol.volume_id))
        self.client.node_stage(vol.volume_id, str(stage), cap)
        self.cleanups.append(lambda: self.client.node_unstage(vol.volume_id, str(stage)))
        target = pod / "mount"
        self.client.node_publish(vol.volume_id, str(target), cap, staging_path=str(stage))
        self.cleanups.append(lambda: self.client.node_unpublish(vol.volume_id, str(target)))
        if not containers:
            return
        bundle, scratch = work / "bundle", work / "scratch"
        rootfs = bundle / "rootfs"
        for d in (rootfs, scratch):
            d.mkdir(parents=True)
        config = self._config()
        config["process"]["args"] = ["/bin/sh", "-c", LOOP]
        config["process"]["terminal"] = False
        config["root"] = {"path": str(rootfs), "readonly": False}
        config["mounts"].append({"destination": "/data", "type": "bind", "source": str(target), "options": ["rbind", "rw"]})
        (bundle / "config.json").write_text(json.dumps(config))
        run("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(scratch))
        self.cleanups.append(lambda: subprocess.run(["umount", str(scratch)], capture_output=True))
        (scratch / "upper").mkdir()
        (scratch / "work").mkdir()
        run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={scratch}/upper,workdir={scratch}/work",
            str(rootfs))
        self.cleanups.append(lambda: subprocess.run(["umount", str(rootfs)], capture_output=True))
        root, name = work / "runc", f"csi-bench-{i}"
        subprocess.run(["runc", "--root", str(root), "run", "-d", "--bundle", str(bundle), name], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cleanups.append(lambda: subprocess.run(["runc", "--root", str(root), "delete", "--force", name],
                                                    capture_output=True))
        wait(lambda: json.loads(run("runc", "--root", str(root), "state", name))["status"] == "running", "container")

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except Exception as exc:  # keep cleaning
                print(f"cleanup: {exc}", file=sys.stderr)
        self.cleanups.clear()
        self.client.close()


def stowage_run(base: Path, endpoint: str, count: int, csi: bool = True) -> float:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    up = UpProcess("up", ["--data-dir", str(base / "data"), "--listen", "127.0.0.1:0",
                          "--csi-driver", f"{TEST_NAME}={endpoint}"], env, timeout=180, new_session=True)
    client: Client | None = None
    try:
        ready = up.wait_for("stowage is ready")
        client = Client.from_kubeconfig(Path(ready["kubeconfig"]))
        client.create({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
                       "provisioner": TEST_NAME, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"})
        start = time.perf_counter()
        for i in range(count):
            volume = ({"name": "data", "persistentVolumeClaim": {"claimName": f"c{i}"}} if csi
                      else {"name": "data", "emptyDir": {}})
            if not csi:
                client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "default"},
                               "spec": {"terminationGracePeriodSeconds": 1,
                                        "containers": [{"name": "main", "image": "debian:12",
                                                        "command": ["/bin/sh", "-c", LOOP],
                                                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                                        "volumes": [volume]}})
                continue
            client.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": f"c{i}", "namespace": "default"},
                           "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "csi",
                                    "resources": {"requests": {"storage": str(SIZE)}}}})
            client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "namespace": "default"},
                           "spec": {"terminationGracePeriodSeconds": 1,
                                    "containers": [{"name": "main", "image": "debian:12",
                                                    "command": ["/bin/sh", "-c", LOOP],
                                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                                    "volumes": [volume]}})

        def all_running() -> bool:
            pods, _ = client.list("pods", "default")  # type: ignore[union-attr]
            return sum((p.get("status") or {}).get("phase") == "Running" for p in pods) == count

        wait(all_running, f"{count} pods Running", 900, interval=0.2)
        elapsed = time.perf_counter() - start
        for i in range(count):
            client.delete("pods", f"p{i}", "default")
        wait(lambda: not client.list("pods", "default")[0], "pods gone", 600, interval=0.5)  # type: ignore[union-attr]
        for i in range(count if csi else 0):
            client.delete("persistentvolumeclaims", f"c{i}", "default")
        wait(lambda: not client.list("persistentvolumes")[0], "volumes deleted", 600, interval=0.5)  # type: ignore[union-attr]
        return elapsed
    finally:
        if client is not None:
            client.close()
        if up.proc.poll() is None:
            try:
                up.stop(120)
            except Exception:
                up.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (bind mounts, runc)", file=sys.stderr)
        return 2
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="stowage-csi-bench-"))
    drv = None
    try:
        drv = start_test_driver(base / "driver", "bench")
        direct = Direct(base / "direct", drv.endpoint)
        try:
            start = time.perf_counter()
            for i in range(args.count):
                direct.one(i, containers=False)
            grpc_only = time.perf_counter() - start
            direct.close()
            start = time.perf_counter()
            for i in range(args.count):
                direct.one(i, containers=True)
            direct_containers = time.perf_counter() - start
        finally:
            direct.close()
        stowage = stowage_run(base / "stowage", drv.endpoint, args.count)
        # For reading the ratio: the same pods with an emptyDir instead of a CSI claim (Stowage's own pod cost).
        no_csi = stowage_run(base / "stowage-nocsi", drv.endpoint, args.count, csi=False)
    finally:
        if drv is not None:
            stop_driver(drv.proc)
        unmount_under(base)
        cleanup_tree(base)
    result = {
        "benchmark": "csi", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "count": args.count, "driver": "tests/integration/csi/csi_test_driver.py",
        "stowage_seconds": round(stowage, 3), "direct_with_containers_seconds": round(direct_containers, 3),
        "direct_grpc_only_seconds": round(grpc_only, 3), "stowage_emptydir_pods_seconds": round(no_csi, 3),
        "ratio": round(stowage / direct_containers, 3), "ratio_vs_grpc_only": round(stowage / grpc_only, 3),
        "aim": 1.3,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
