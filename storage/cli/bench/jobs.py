"""The benchmark's fio job profiles and the rules that make their numbers valid (BN3-BN7)."""
from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass, field

from storage.cli.bench.stats import PERCENTILES

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Job:
    name: str
    title: str
    args: tuple[str, ...]
    # What the job is for, and so which figures its table row shows.
    kind: str  # "iops" | "bandwidth" | "latency" | "mixed" | "fsync" | "custom"


@dataclass(frozen=True)
class Settings:
    """BN4: the defaults that make figures valid, or the --quick smoke run's."""
    size: int
    runtime: int
    ramp: int
    repeats: int
    quick: bool = False
    extra: tuple[str, ...] = field(default_factory=tuple)


# BN3: the profiles. Queue depths: 64 for IOPS saturates a single SSD queue without
# one job per CPU (these nodes have few); 16 x 1 MiB keeps a sequential stream busy.
PROFILES: tuple[Job, ...] = (
    Job("randread-iops", "random read 4 KiB QD64", ("--rw=randread", "--bs=4k", "--iodepth=64", "--ioengine=libaio"), "iops"),
    Job("randwrite-iops", "random write 4 KiB QD64", ("--rw=randwrite", "--bs=4k", "--iodepth=64", "--ioengine=libaio"), "iops"),
    Job("seqread-bw", "sequential read 1 MiB QD16", ("--rw=read", "--bs=1m", "--iodepth=16", "--ioengine=libaio"), "bandwidth"),
    Job("seqwrite-bw", "sequential write 1 MiB QD16", ("--rw=write", "--bs=1m", "--iodepth=16", "--ioengine=libaio"), "bandwidth"),
    Job("randread-lat", "random read 4 KiB QD1", ("--rw=randread", "--bs=4k", "--iodepth=1", "--ioengine=libaio"), "latency"),
    Job("randwrite-lat", "random write 4 KiB QD1", ("--rw=randwrite", "--bs=4k", "--iodepth=1", "--ioengine=libaio"), "latency"),
    Job("mixed-70-30", "random 70% read / 30% write 4 KiB QD32",
        ("--rw=randrw", "--rwmixread=70", "--bs=4k", "--iodepth=32", "--ioengine=libaio"), "mixed"),
    # etcd's own disk check: 2300-byte sequential writes, each followed by fdatasync, sync engine.
    Job("fdatasync", "write 2300 B + fdatasync (etcd)", ("--rw=write", "--bs=2300", "--ioengine=sync", "--fdatasync=1"), "fsync"),
)
BY_NAME = {j.name: j for j in PROFILES}

# BN33: fio's I/O buffers on transparent huge pages, through glibc's malloc tunable (fio 3.33 has no
# option for it; with THP in "madvise" mode malloc then asks for them). A direct I/O request is built
# from the buffer's pages: scattered 4 KiB pages need 256 segments for 1 MiB, and a device that takes
# 128 of at most 64 KiB (a loop device) splits it in two. Whether fio's pages happened to be contiguous
# then decided the figure, on the host or in a pod alike: 512 KiB requests read ~500 MiB/s and whole
# ones 1.5-2.4 GiB/s from the same file. Huge pages hand every request to the device whole.
FIO = ("env", "GLIBC_TUNABLES=glibc.malloc.hugetlb=1", "fio")

BANDWIDTH_GUESS = 400 * MiB  # bytes/s assumed before anything is measured (a SATA SSD)
MIN_SIZE = 64 * MiB


def test_size(volume_bytes: int, memory_bytes: int, bandwidth: int = BANDWIDTH_GUESS, quick: bool = False) -> int:
    """BN5: kbench's rule, at least 25 s worth of the device's bandwidth, where it fits.

    The file takes at most 75% of the volume (the filesystem needs room of its own, and the fdatasync
    job's file, see ``sync_size``, must fit beside it for a pod that cannot use ext4's reserved blocks) and, to keep
    any cache that direct I/O does not bypass (a device's or a loop file's host page cache) from
    holding the whole file, at least as much as half the node's memory when the volume allows.
    The smoke run uses a small file: it checks the machinery, not the disk.
    """
    fits = int(volume_bytes * 0.75) // MiB * MiB
    if quick:
        return max(min(MIN_SIZE, fits), MiB)
    wanted = max(25 * bandwidth, memory_bytes // 2, MIN_SIZE)
    return max(min(wanted, fits), MiB)


def settings(volume_bytes: int, memory_bytes: int, *, quick: bool, repeats: int | None, runtime: int | None,
             ramp: int | None) -> Settings:
    if quick:
        return Settings(test_size(volume_bytes, memory_bytes, quick=True), runtime or 2, 1 if ramp is None else ramp,
                        repeats or 1, quick=True)
    return Settings(test_size(volume_bytes, memory_bytes), runtime or 20, 5 if ramp is None else ramp, repeats or 5)


def fio_argv(job: Job, s: Settings, filename: str) -> list[str]:
    """BN4: direct I/O, a ramp time that is not measured, time-based runs, a fresh random
    pattern each repeat (``randrepeat=0``) so a cache cannot learn it, and fixed percentiles."""
    own_sync_file = job.kind == "fsync" and posixpath.basename(filename) == SYNC_FILE
    size = sync_size(s.size) if own_sync_file else s.size
    argv = [*FIO, f"--name={job.name}", f"--filename={filename}", f"--size={size}", "--direct=1",
            "--time_based", f"--runtime={s.runtime}", f"--ramp_time={s.ramp}", "--randrepeat=0",
            "--norandommap", "--refill_buffers", "--group_reporting", "--output-format=json",
            "--percentile_list=" + ":".join(f"{p:g}" for p in PERCENTILES), *job.args, *s.extra]
    if job.kind == "fsync":
        # fdatasync per write is slow by design; direct I/O would hide the journal etcd waits for.
        argv.remove("--direct=1")
        argv.append("--direct=0")
    return argv


def sync_size(test_size: int) -> int:
    """BN31: the fdatasync job's own file: a 32nd of the test file, between 1 MiB and 64 MiB (one etcd WAL
    segment). It must fit in what the test file leaves free: at the whole test file's size it ran out of
    space on small volumes."""
    return max(MiB, min(64 * MiB, test_size // 32 // MiB * MiB))


SYNC_FILE = "fio-sync.dat"


def prefill_argv(s: Settings, filename: str) -> list[str]:
    """BN30: the test file (or device range) written in full once, sequentially with direct I/O, before the
    first measured job. Without it a job's figure depended on what ran before it: a write job on a file
    fio had only fallocated (unwritten extents) measured ext4 converting extents, not the disk (half the
    IOPS of the same job on a written file), and a job run alone measured another file than in a full run."""
    return [*FIO, "--name=prefill", f"--filename={filename}", f"--size={s.size}", "--rw=write", "--bs=1m",
            "--iodepth=16", "--ioengine=libaio", "--direct=1", "--fallocate=none", "--output-format=json"]


def target_for(job: Job, filename: str, block: bool = False) -> str:
    """BN31: the file a job runs on. The fdatasync job writes a file of its own, new every run (removed
    after it, see ``fresh_each_run``), as etcd writes a freshly preallocated WAL segment; every other job
    the prefilled test file (or the device in Block mode, where fdatasync has no file to make)."""
    if job.kind == "fsync" and not block:
        return posixpath.join(posixpath.dirname(filename), SYNC_FILE)
    return filename


def fresh_each_run(job: Job, block: bool = False) -> bool:
    return job.kind == "fsync" and not block


def job_file_argv(s: Settings, job_file: str) -> list[str]:
    """A user's job file runs as written (BN6): only the output format is ours."""
    return [*FIO, "--output-format=json", f"--percentile_list={':'.join(f'{p:g}' for p in PERCENTILES)}", job_file]


def select(names: list[str] | None) -> list[Job]:
    if not names:
        return list(PROFILES)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise ValueError(f"--jobs: unknown job {', '.join(unknown)} (known: {', '.join(BY_NAME)})")
    return [BY_NAME[n] for n in names]


def shell(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
