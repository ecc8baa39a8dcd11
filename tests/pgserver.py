"""A private, throw-away PostgreSQL cluster for tests and benchmarks.

It lives in its own temporary directory, listens on 127.0.0.1 at a port the
OS picked and on a unix socket inside that directory, runs with fsync off,
and is stopped and deleted when ``stop`` is called or the process exits. The
machine's default cluster is never touched.
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import weakref
from pathlib import Path

PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin"), Path("/usr/lib/postgresql/17/bin")]
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL binaries are not installed: callers skip rather than fail."""


def find_bin_dir() -> Path:
    env = os.environ.get("STOWAGE_PG_BIN")
    candidates = [Path(env)] if env else []
    candidates += PG_BIN_CANDIDATES
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(bin_dir: Path, data_dir: Path, root: Path, as_postgres: bool) -> None:
    if (data_dir / "postmaster.pid").exists():
        cmd = [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_owner(cmd, as_postgres), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(root, ignore_errors=True)


def _as_owner(cmd: list[str], as_postgres: bool) -> list[str]:
    # initdb refuses to run as root, so the cluster belongs to the postgres user.
    return ["runuser", "-u", SUPERUSER, "--", *cmd] if as_postgres else cmd


class PostgresServer:
    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.as_postgres = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="stowage-pg-"))
        self.data_dir = self.root / "data"
        self.port = 0
        self._finalizer = weakref.finalize(self, _stop, self.bin_dir, self.data_dir, self.root, self.as_postgres)
        atexit.register(self._finalizer)

    def _run(self, cmd: list[str]) -> None:
        proc = subprocess.run(_as_owner(cmd, self.as_postgres), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self) -> "PostgresServer":
        if self.as_postgres:
            import pwd

            entry = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)
        self._run([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8"])
        last_error: Exception | None = None
        # Another process may take the OS-chosen port before the server binds it: retry with a new one.
        for _ in range(5):
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-w", "-t", "60", "-l", str(self.root / "server.log"), "-o", options, "start"])
                return self
            except RuntimeError as exc:
                last_error = exc
        raise RuntimeError(f"PostgreSQL did not start: {last_error}; log: {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "server.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self._finalizer()

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
