"""BN33: fio's buffers on huge pages, so a direct 1 MiB request reaches a loop device whole (real fio on a
real loop device with direct I/O, ext4 on it; root)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from storage.cli.bench import jobs as jobmod
from storage.system import loop
from support import host_tmp_dir, need_programs, need_root

MiB = 1 << 20
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _reads(device: str) -> tuple[int, int]:
    """(completed reads, sectors read) of a block device, from /proc/diskstats."""
    name = Path(device).name
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if f[2] == name:
            return int(f[3]), int(f[5])
    raise AssertionError(f"{name} is not in /proc/diskstats")


def test_every_fio_run_asks_for_huge_page_buffers() -> None:
    """BN33: the jobs, the prefill and a user's job file all run fio with glibc's huge-page tunable."""
    s = jobmod.Settings(size=64 * MiB, runtime=2, ramp=1, repeats=1)
    argvs = [jobmod.fio_argv(j, s, "/data/x") for j in jobmod.PROFILES]
    argvs += [jobmod.prefill_argv(s, "/data/x"), jobmod.job_file_argv(s, "/tmp/job.fio")]
    for argv in argvs:
        assert argv[:3] == ["env", "GLIBC_TUNABLES=glibc.malloc.hugetlb=1", "fio"], argv


def test_sequential_reads_reach_a_loop_device_whole() -> None:
    """BN33: with the profile's argv, fio's 1 MiB direct reads arrive at a loop device (128 segments of at
    most 64 KiB) as 1 MiB requests; from scattered 4 KiB pages each was split into two of 512 KiB."""
    need_root("loop devices and mounts")
    need_programs("fio", "losetup", "mkfs.ext4")
    mode = THP.read_text() if THP.exists() else ""
    if "[never]" in mode or not mode:
        pytest.skip(f"transparent huge pages are off on this kernel ({mode.strip() or 'no THP'}); BN33 needs them")
    with host_tmp_dir("stowage-bn33-") as base:
        image = base / "disk.img"
        with open(image, "wb") as f:
            f.truncate(512 * MiB)
        device = loop.attach(image, direct_io=True)
        assert loop.direct_io_enabled(device)
        subprocess.run(["mkfs.ext4", "-q", device], check=True, timeout=120)
        mnt = base / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", device, str(mnt)], check=True, timeout=60)
        s = jobmod.Settings(size=256 * MiB, runtime=2, ramp=0, repeats=1)
        data = str(mnt / "fio.dat")
        subprocess.run(jobmod.prefill_argv(s, data), capture_output=True, check=True, timeout=300)
        before = _reads(device)
        out = subprocess.run(jobmod.fio_argv(jobmod.BY_NAME["seqread-bw"], s, data), capture_output=True,
                             text=True, check=True, timeout=300).stdout
        reads, sectors = (b - a for a, b in zip(before, _reads(device)))
        report = json.loads(out[out.find("{"):])
        assert report["jobs"][0]["read"]["io_bytes"] > 0
        average_kib = sectors * 512 / 1024 / reads
        # Huge pages are granted on a best-effort basis: most requests whole is the point, not every one
        # (measured here: 910-1,024 KiB with them, 512-655 KiB without).
        assert average_kib > 700, f"fio's 1 MiB reads reached {device} as {average_kib:.0f} KiB requests on average"
