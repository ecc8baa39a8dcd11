"""One Azurite blob service per test session (127.0.0.1, a port the OS picks), stopped at the end.

tests/conftest.py exposes the ``azurite`` fixture to the whole tree (the Azure suite and the backup engine's
object-store tests share one service); tests and benchmarks import names from here (a unique module name).
``running_azurite()`` is the same service as a context manager, for benchmarks."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import contextlib
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
DEV_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret).
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _azurite_binary() -> str | None:
    candidates = [os.environ.get("AZURITE_BLOB", ""), str(REPO / ".cache/node/node_modules/.bin/azurite-blob")]
    try:  # a worktree shares the main checkout's setup cache
        common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        if common:
            candidates.append(str(Path(common).parent / ".cache/node/node_modules/.bin/azurite-blob"))
    except (OSError, subprocess.SubprocessError):
        pass
    candidates.append(shutil.which("azurite-blob") or "")
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@dataclass(frozen=True)
class Azurite:
    port: int

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{DEV_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
                f"BlobEndpoint={self.blob_endpoint};")


class AzuriteUnavailable(RuntimeError):
    pass


@contextlib.contextmanager
def running_azurite() -> Iterator[Azurite]:
    binary = _azurite_binary()
    if binary is None:
        raise AzuriteUnavailable("azurite-blob not installed (scripts/setup.sh installs it)")
    location = tempfile.mkdtemp(prefix="stowage-azurite-")
    proc = subprocess.Popen(
        [binary, "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", location, "--skipApiVersionCheck",
         "--disableTelemetry", "--silent"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: list[int] = []
    ready = threading.Event()

    def watch() -> None:  # the port is printed once the service listens
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"listens on http://127\.0\.0\.1:(\d+)", line)
            if match and not found:
                found.append(int(match.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(60) or not found:
            raise RuntimeError("azurite did not start")
        yield Azurite(found[0])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(location, ignore_errors=True)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    try:
        service = running_azurite()
        started = service.__enter__()
    except AzuriteUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield started
    finally:
        service.__exit__(None, None, None)
