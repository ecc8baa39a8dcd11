"""The overhead benchmark's control sides (SEMANTICS BN36): fio on the host with one part of a pod's
sandbox at a time, the block I/O cgroup and the RuntimeDefault seccomp filter."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import need_programs, need_root

# One worker for the module: the run's check for left-over cgroups would see the other test's group.
pytestmark = [pytest.mark.root, pytest.mark.xdist_group("bench-overhead-controls")]

REPO = Path(__file__).resolve().parents[2]
SANDBOXED = REPO / "benchmarks" / "sandboxed.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

# Each line a system call and its errno, or "ok"; run under the filter.
PROBE = r"""
import ctypes, errno, os, tempfile
libc = ctypes.CDLL(None, use_errno=True)
def call(name, f):
    try:
        f()
        print(name, "ok")
    except OSError as exc:
        print(name, errno.errorcode[exc.errno])
def checked(rc):
    if rc != 0:
        raise OSError(ctypes.get_errno(), "")
def mount():
    # A target that does not exist: without the filter the kernel answers ENOENT and mounts nothing.
    checked(libc.mount(b"none", b"/nonexistent-stowage-probe", b"tmpfs", 0, None))
call("unshare", lambda: checked(libc.unshare(0x00020000)))  # CLONE_NEWNS
call("mount", mount)
def fdatasync():
    with tempfile.TemporaryFile() as f:
        f.write(b"x" * 2300)
        os.fdatasync(f.fileno())
call("fdatasync", fdatasync)
print("Seccomp", [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0])
"""


def _probe(*flags: str) -> dict[str, str]:
    out = subprocess.run([sys.executable, str(SANDBOXED), *flags, "--", sys.executable, "-c", PROBE],
                         env=ENV, capture_output=True, text=True, timeout=60, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def test_bn36_the_seccomp_control_denies_what_a_pods_filter_denies_and_allows_io() -> None:
    """BN36: the "seccomp" side runs under the RuntimeDefault filter: unshare and mount fail with EPERM,
    as in a pod without CAP_SYS_ADMIN, while writes and fdatasync work; without the flag nothing is
    filtered (as root the unshare works, of this short-lived process only, and the mount reaches the
    kernel's path lookup: its target does not exist, so nothing is ever mounted)."""
    need_root("the unfiltered side's unshare and mount need CAP_SYS_ADMIN")
    filtered = _probe("--seccomp")
    assert filtered == {"unshare": "EPERM", "mount": "EPERM", "fdatasync": "ok", "Seccomp": "2"}, filtered
    plain = _probe()
    assert plain == {"unshare": "ok", "mount": "ENOENT", "fdatasync": "ok", "Seccomp": "0"}, plain


def test_bn36_the_cgroup_control_runs_fio_from_its_own_block_io_cgroup_and_removes_it() -> None:
    need_root("cgroups")
    # Loaded by its path: the benchmarks' directory on sys.path would shadow the project's own modules
    # (its statefulset.py) for every later test of this worker.
    spec = importlib.util.spec_from_file_location("stowage_bench_sandboxed", SANDBOXED)
    assert spec is not None and spec.loader is not None
    sandboxed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sandboxed)
    try:
        group = sandboxed.BlockIOGroup()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    try:
        seen = subprocess.run(group.wrap(["cat", "/proc/self/cgroup"], seccomp=False), env=ENV, capture_output=True,
                              text=True, timeout=60, check=True).stdout
        name = "/" + group.path.name
        assert any(line.split(":")[1] in ("blkio", "") and line.split(":")[2] == name for line in seen.splitlines()), seen
        # The filter's side runs from the group a pod's I/O comes from: on cgroup v1 the host's (PF97).
        filtered = subprocess.run(group.wrap(["cat", "/proc/self/cgroup"], seccomp=True), env=ENV, capture_output=True,
                                  text=True, timeout=60, check=True).stdout
        in_group = any(line.split(":")[1] in ("blkio", "") and line.split(":")[2] == name for line in filtered.splitlines())
        assert in_group is not group.pods_share_host_group, filtered
    finally:
        group.close()
    assert not group.path.exists()


def _traces() -> tuple[set[str], set[str], set[str]]:
    """What a run of the benchmark could leave: mounts, loop devices and block I/O cgroups of its own."""
    mark = "stowage-bench-overhead-"
    mounted = {line for line in Path("/proc/mounts").read_text().splitlines() if mark in line}
    loops = {line for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
             if mark in line}
    groups = {str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{mark}*")} | {str(p) for p in Path("/sys/fs/cgroup").glob(f"{mark}*")}
    return mounted, loops, groups


@pytest.mark.slow
def test_bn36_the_overhead_benchmark_with_controls_splits_the_ratio(tmp_path: Path) -> None:
    """BN36: a one-round run on a tmpfs pool records, per job, bench and direct fio plus both controls in
    every pair, and the ratios whose product is bench ÷ direct within a round: seccomp ÷ direct and
    bench ÷ seccomp where a pod's I/O comes from the host's blkio group (cgroup v1, PF97), else cgroup ÷
    direct, seccomp ÷ cgroup and bench ÷ seccomp; the run leaves no mount, loop device or cgroup behind."""
    need_root("loop devices, mounts, cgroups and runc containers")
    need_programs("runc", "losetup", "mkfs.ext4", "fio")
    before = _traces()
    out = tmp_path / "overhead.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_overhead.py"), "--rounds", "1",
                           "--runtime", "1", "--ramp", "0", "--size", "256Mi", "--jobs", "randwrite-iops",
                           "--pool-backing", "tmpfs", "--controls", "--out", str(out)],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert out.exists(), f"no result:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(out.read_text())
    (pair,) = result["pairs"]["randwrite-iops"]
    assert set(pair) == {"bench", "direct", "cgroup", "seccomp"}, pair
    assert all(side["write_iops"] > 0 for side in pair.values()), pair
    split = result["controls"]["randwrite-iops"]["write_iops"]
    if result["pod_blkio_group"] == "host":
        product = split["seccomp_over_direct"] * split["bench_over_seccomp"]
    else:
        assert result["pod_blkio_group"] == "own"
        product = split["cgroup_over_direct"] * split["seccomp_over_cgroup"] * split["bench_over_seccomp"]
    assert product == pytest.approx(result["ratios"]["randwrite-iops"]["write_iops"], rel=1e-9)
    assert result["order"]["randwrite-iops"] == ["BDCS"]
    assert _traces() == before
