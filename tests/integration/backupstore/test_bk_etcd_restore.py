"""An etcd member's data directory, backed up as a tree and restored elsewhere, is read by etcd (BK10, BK11, BK13)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from objectstore_servers import drop_target, make_s3_target
from support import need_programs

from storage.system.backupstore import backup_tree, open_store, restore_tree


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Etcd:
    def __init__(self, data_dir: Path, client_port: int, peer_port: int) -> None:
        self.url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.proc = subprocess.Popen(
            ["etcd", "--name", "bk", "--data-dir", str(data_dir), "--listen-client-urls", self.url,
             "--advertise-client-urls", self.url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"bk={peer}", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while self.ctl("endpoint", "health", check=False).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("etcd did not become healthy")
            time.sleep(0.1)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["etcdctl", "--endpoints", self.url, "--dial-timeout", "2s", *args],
                              capture_output=True, text=True, check=check, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def s3_target(moto_s3_endpoint: str) -> Iterator[tuple[str, dict[str, str]]]:
    target = make_s3_target(moto_s3_endpoint)
    try:
        yield target.url, target.credentials
    finally:
        drop_target(target)


def test_bk_etcd_data_dir_round_trip(s3_target, tmp_path: Path) -> None:
    """BK10, BK11, BK13: etcd's data dir (stopped member) backed up to S3 and restored into another directory;
    an etcd started on the restored dir serves every key written before, with the same revision."""
    need_programs("etcd", "etcdctl")
    store = open_store(*s3_target)
    data = tmp_path / "member-data"
    client_port, peer_port = _free_port(), _free_port()
    etcd = Etcd(data, client_port, peer_port)
    try:
        for i in range(200):
            etcd.ctl("put", f"/registry/k{i:03d}", f"value-{i}" * 10)
        revision = etcd.ctl("get", "/registry/k199", "-w", "json").stdout.split('"revision":')[1].split(",")[0]
    finally:
        etcd.stop()
    backup_tree(store, data, backup_id="etcd-1")
    shutil.rmtree(data)
    restored = tmp_path / "restored-data"
    restore_tree(store, "etcd-1", restored)
    etcd = Etcd(restored, client_port, peer_port)
    try:
        out = etcd.ctl("get", "/registry/", "--prefix", "--keys-only").stdout.split()
        assert out == [f"/registry/k{i:03d}" for i in range(200)]
        assert etcd.ctl("get", "/registry/k123", "--print-value-only").stdout.strip() == "value-123" * 10
        now = etcd.ctl("get", "/registry/k199", "-w", "json").stdout.split('"revision":')[1].split(",")[0]
        assert now == revision
    finally:
        etcd.stop()
