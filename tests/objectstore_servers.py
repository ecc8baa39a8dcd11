"""Object-store servers for tests and benchmarks: moto's S3, the gcp-storage-emulator, Azurite blob.

Each is a context manager here (benchmarks use them directly) and a lazily started session fixture in
tests/conftest.py. All listen on 127.0.0.1 on free ports and leave no process or temp dir behind.
``ObjectStoreTarget`` makes a fresh bucket/container and names it the way the backup engine's
``open_store`` takes it (a URL and a Secret-like credentials dict).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from azurite_service import DEV_ACCOUNT, DEV_KEY, Azurite, running_azurite  # noqa: F401  (re-exported)

S3_REGION = "us-east-1"
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing-secret"  # moto accepts any; distinct from the key id so tests can look for it
GCS_PROJECT = "stowage-test"


@contextlib.contextmanager
def running_moto_s3() -> Iterator[str]:
    """moto's S3 in this process (a thread), on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def running_moto_s3_process(extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """moto's server as a child process (its own GIL: what benchmarks measure against, and where settings
    such as INITIAL_NO_AUTH_ACTION_COUNT, read at import, can differ from this process's); yields its endpoint."""
    for _attempt in range(5):
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(extra_env or {})})
        endpoint = f"http://127.0.0.1:{port}"
        try:
            if _wait_http(proc, f"{endpoint}/moto-api/"):
                yield endpoint
                return
        finally:
            _stop(proc)
    raise RuntimeError("moto server did not start")


def _wait_http(proc: subprocess.Popen[bytes], url: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _emulator_command() -> list[str]:
    exe = shutil.which("gcp-storage-emulator")
    # The module form works where only the package (not its console script) is on PATH.
    return [exe] if exe else [sys.executable, "-m", "gcp_storage_emulator"]


@contextlib.contextmanager
def running_gcs_emulator() -> Iterator[str]:
    """The gcp-storage-emulator (PyPI) as a subprocess storing on disk in a temp dir; yields its endpoint.

    It takes no port 0, so a free port is picked first; a lost race (someone took it) is retried."""
    data_dir = tempfile.mkdtemp(prefix="stowage-gcs-")
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(5):
            port = _free_port()
            proc = subprocess.Popen(
                [*_emulator_command(), "-d", data_dir, "start", "--host", "127.0.0.1", "--port", str(port), "-q"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            endpoint = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"{endpoint}/storage/v1/b?project={GCS_PROJECT}", timeout=2):
                        break
                except (urllib.error.URLError, OSError):
                    time.sleep(0.1)
            else:
                _stop(proc)
                proc = None
                continue
            yield endpoint
            return
        raise RuntimeError("gcp-storage-emulator did not start")
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ObjectStoreTarget:
    """A fresh bucket/container on one emulator: ``url`` and ``credentials`` for open_store."""

    kind: str  # "s3" | "gcs" | "azure"
    bucket: str
    url: str
    credentials: dict[str, str]
    endpoint: str
    prefix: str = field(default="backups")

    # It also behaves as the pair (url, credentials): `url, creds = target`, `target[0]`, `open_store(*target)`.
    def __iter__(self) -> Iterator[object]:
        return iter((self.url, self.credentials))

    def __getitem__(self, index: int) -> object:
        return (self.url, self.credentials)[index]

    def __len__(self) -> int:
        return 2


def new_bucket_name() -> str:
    return "bk-" + uuid.uuid4().hex[:20]


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=S3_REGION, aws_access_key_id=S3_ACCESS_KEY,
                        aws_secret_access_key=S3_SECRET_KEY)


def gcs_client(endpoint: str):  # type: ignore[no-untyped-def]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=GCS_PROJECT, credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": endpoint})


def azure_service(azurite: Azurite):  # type: ignore[no-untyped-def]
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite.connection_string)


def make_s3_target(endpoint: str, prefix: str = "backups") -> ObjectStoreTarget:
    bucket = new_bucket_name()
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return ObjectStoreTarget("s3", bucket, f"s3://{bucket}/{prefix}?endpoint={endpoint}&region={S3_REGION}",
                             {"accessKeyID": S3_ACCESS_KEY, "secretAccessKey": S3_SECRET_KEY}, endpoint, prefix)


def make_gcs_target(endpoint: str, prefix: str = "backups") -> ObjectStoreTarget:
    bucket = new_bucket_name()
    gcs_client(endpoint).create_bucket(bucket)
    return ObjectStoreTarget("gcs", bucket, f"gs://{bucket}/{prefix}?endpoint={endpoint}",
                             {"project": GCS_PROJECT}, endpoint, prefix)


def make_azure_target(azurite: Azurite, prefix: str = "backups") -> ObjectStoreTarget:
    container = new_bucket_name()
    azure_service(azurite).create_container(container)
    return ObjectStoreTarget("azure", container, f"azblob://{container}/{prefix}?endpoint={azurite.blob_endpoint}",
                             {"connectionString": azurite.connection_string}, azurite.blob_endpoint, prefix)


def drop_target(target: ObjectStoreTarget, azurite: Azurite | None = None) -> None:
    """Best effort: remove the bucket and what is in it (the servers' temp dirs go at session end anyway)."""
    with contextlib.suppress(Exception):
        if target.kind == "s3":
            s3 = s3_client(target.endpoint)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=target.bucket, Delete={"Objects": keys})
            s3.delete_bucket(Bucket=target.bucket)
        elif target.kind == "gcs":
            gcs_client(target.endpoint).bucket(target.bucket).delete(force=True)
        elif target.kind == "azure" and azurite is not None:
            azure_service(azurite).delete_container(target.bucket)

