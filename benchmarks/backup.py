"""Backups to object storage (storage/system/backupstore) against the bare SDK moving the same bytes, per store.

Stores: moto's S3 server (a child process), the gcp-storage-emulator (child process, data on disk), Azurite
blob (child process), all on 127.0.0.1; each gets a fresh bucket/container.

Volume: a 1 GiB sparse file whose first 512 MiB are random (incompressible) and whose second half is a hole.
  Backup:   backup_block (4 MiB chunks, sha256, zstd level 1 stored raw when it does not shrink, 8 threads,
            holes found with SEEK_DATA and not read or uploaded); throughput = 512 MiB / wall time, manifest
            write included.
  Bare up:  the SDK's normal high-level upload of the same 512 MiB (a separate file holding exactly the
            random half) as ONE object: boto3 ``upload_file`` (managed multipart, default TransferConfig:
            8 MiB parts, 10 threads), google-cloud-storage ``Blob.upload_from_filename`` (its resumable
            upload, one stream), azure-storage-blob ``upload_blob(max_concurrency=8)``.
  Restore:  restore_block into a new 1 GiB sparse file (every chunk's sha256 verified, hole punched) vs the
  Bare down: SDK's normal download of that object to a file: boto3 ``download_file``, GCS
            ``download_to_filename``, Azure ``download_blob(max_concurrency=8).readinto``.
  Dedup:    then 1% of the data (5.12 MiB, ONE contiguous range at a random offset in the random half) is
            overwritten with new random bytes and a second backup runs; figure = bytes it uploaded /
            bytes the first uploaded.
Ratios are ours / bare (throughput), aim >= 0.8; dedup aim < 3%. Source files are in the page cache for both
sides. Each timing is the best of --runs runs (a run = a new backup id in a new bucket for ours).

usage: python benchmarks/backup.py [--stores s3,gcs,azure] [--runs 1] [--data-mib 512] [--out FILE]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from objectstore_servers import (  # noqa: E402
    ObjectStoreTarget,
    azure_service,
    gcs_client,
    make_azure_target,
    make_gcs_target,
    make_s3_target,
    running_azurite,
    running_gcs_emulator,
    running_moto_s3_process,
    s3_client,
)

from storage.system.backupstore import backup_block, open_store, restore_block  # noqa: E402

MiB = 1 << 20


def make_volume(base: Path, data_mib: int) -> tuple[Path, Path]:
    """(image: 2x data_mib, random first half, hole after; data: the same random bytes alone)."""
    image, data = base / "volume.img", base / "data.bin"
    with open(image, "wb") as img, open(data, "wb") as raw:
        for _ in range(data_mib):
            block = os.urandom(MiB)
            img.write(block)
            raw.write(block)
        img.truncate(2 * data_mib * MiB)
    return image, data


class Bare:
    """The SDK's normal one-object upload and download for one target."""

    def __init__(self, target: ObjectStoreTarget, azurite: Any) -> None:
        self.target = target
        self.azurite = azurite
        self.key = "bare/data.bin"

    def upload(self, path: Path) -> None:
        t = self.target
        if t.kind == "s3":
            s3_client(t.endpoint).upload_file(str(path), t.bucket, self.key)
        elif t.kind == "gcs":
            gcs_client(t.endpoint).bucket(t.bucket).blob(self.key).upload_from_filename(str(path))
        else:
            with open(path, "rb") as f:
                azure_service(self.azurite).get_container_client(t.bucket).upload_blob(
                    self.key, f, overwrite=True, max_concurrency=8)

    def download(self, path: Path) -> None:
        t = self.target
        if t.kind == "s3":
            s3_client(t.endpoint).download_file(t.bucket, self.key, str(path))
        elif t.kind == "gcs":
            gcs_client(t.endpoint).bucket(t.bucket).blob(self.key).download_to_filename(str(path))
        else:
            with open(path, "wb") as f:
                azure_service(self.azurite).get_container_client(t.bucket).download_blob(
                    self.key, max_concurrency=8).readinto(f)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextlib.contextmanager
def servers(kinds: list[str]) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        out: dict[str, Any] = {}
        if "s3" in kinds:
            out["s3"] = stack.enter_context(running_moto_s3_process())
        if "gcs" in kinds:
            out["gcs"] = stack.enter_context(running_gcs_emulator())
        if "azure" in kinds:
            out["azure"] = stack.enter_context(running_azurite())
        yield out


def new_target(kind: str, server: Any) -> ObjectStoreTarget:
    return {"s3": make_s3_target, "gcs": make_gcs_target, "azure": make_azure_target}[kind](server)


def bench_store(kind: str, server: Any, image: Path, data: Path, base: Path, data_mib: int,
                runs: int, workers: int) -> dict[str, Any]:
    threads = {"workers": workers} if workers else {}
    data_bytes = data_mib * MiB
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    for run in range(runs):
        target = new_target(kind, server)
        bare = Bare(target, server)
        store = open_store(*target)
        keep("bare_up", timed(lambda: bare.upload(data)))
        result: dict[str, Any] = {}
        keep("ours_up", timed(lambda: result.update(first=backup_block(store, image, backup_id=f"vol-{run}-a", **threads))))
        out = base / "restored.img"
        with open(out, "wb") as f:
            f.truncate(2 * data_bytes)
        keep("ours_down", timed(lambda: restore_block(store, f"vol-{run}-a", out, **threads)))
        bare_out = base / "bare-download.bin"
        keep("bare_down", timed(lambda: bare.download(bare_out)))
        if run == 0:
            with open(image, "rb") as a, open(out, "rb") as b:
                while (x := a.read(16 * MiB)) or b.read(1):
                    if x != b.read(len(x)):
                        raise SystemExit(f"{kind}: restored image differs from the source")
            first_stats = result["first"][1]
        out.unlink()
        bare_out.unlink()
    # A second backup after changing 1% of the data in one contiguous range.
    changed = data_bytes // 100
    offset = random.Random(14).randrange(0, data_bytes - changed)
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(changed))
    _, second = backup_block(store, image, backup_id=f"vol-{runs - 1}-b", **threads)
    mb = data_bytes / 1e6
    return {
        "store": kind,
        "backup_MBps": round(mb / best["ours_up"], 1), "bare_upload_MBps": round(mb / best["bare_up"], 1),
        "backup_ratio": round(best["bare_up"] / best["ours_up"], 2),
        "restore_MBps": round(mb / best["ours_down"], 1), "bare_download_MBps": round(mb / best["bare_down"], 1),
        "restore_ratio": round(best["bare_down"] / best["ours_down"], 2),
        "first_backup_uploaded_MiB": round(first_stats.bytes_uploaded / MiB, 1),
        "second_backup_uploaded_MiB": round(second.bytes_uploaded / MiB, 1),
        "second_over_first_pct": round(100 * second.bytes_uploaded / first_stats.bytes_uploaded, 2),
        "changed_MiB": round(changed / MiB, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stores", default="s3,gcs,azure")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--data-mib", type=int, default=512)
    parser.add_argument("--workers", type=int, default=0, help="engine threads (default: the engine's own)")
    parser.add_argument("--out")
    args = parser.parse_args()
    kinds = [k for k in args.stores.split(",") if k]
    base = Path(tempfile.mkdtemp(prefix="stowage-bench-backup-"))
    results = []
    try:
        with servers(kinds) as running:
            for kind in kinds:
                image, data = make_volume(base, args.data_mib)  # fresh per store: the dedup step changes it
                row = bench_store(kind, running[kind], image, data, base, args.data_mib, args.runs, args.workers)
                results.append(row)
                print(f"{kind:6} backup {row['backup_MBps']:7.1f} MB/s vs bare upload {row['bare_upload_MBps']:7.1f}"
                      f" MB/s = {row['backup_ratio']:.2f}x | restore {row['restore_MBps']:7.1f} MB/s vs bare"
                      f" download {row['bare_download_MBps']:7.1f} MB/s = {row['restore_ratio']:.2f}x | 2nd backup"
                      f" after 1% change: {row['second_backup_uploaded_MiB']} MiB of"
                      f" {row['first_backup_uploaded_MiB']} MiB = {row['second_over_first_pct']}%", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    report = {"benchmark": "backup", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "host": platform.node(), "cpus": os.cpu_count(), "data_MiB": args.data_mib,
              "volume_MiB": 2 * args.data_mib, "runs": args.runs, "results": results}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
