"""``stowage serve`` replicas: the leader election flags and ``--replicas N`` (SEMANTICS HA1-HA8).

``stowage serve --replicas N --store postgresql://...`` is a local supervisor:
it starts N ordinary ``stowage serve`` processes on the same store, each with
its own data dir (``<data-dir>/replica-<i>``) and port, all with the same
EncryptionConfiguration (``<data-dir>/encryption-config.yaml`` unless
``--encryption-provider-config`` is given), and writes ``<data-dir>/kubeconfig``
naming every replica. On other hosts, run ``stowage serve`` once per host with
the same ``--store`` and ``--encryption-provider-config``: that is all a
replica needs (the token, the CA and the signing keys come from the store).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import structlog

from storage.cli.errors import CommandError

log = structlog.get_logger(__name__)

# Flags a supervisor sets itself for each replica, with whether they take a value.
_OWN_FLAGS = {"--replicas": True, "--data-dir": True, "--listen": True, "--log-format": True,
              "-f": True, "--filename": True, "--encryption-provider-config": True, "--api-server-cpu": True}


def leader_election_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--leader-elect/--no-leader-elect", "leader_elect", default=None,
                     help="Run the controllers only while holding the Lease kube-system/stowage-controller-manager, "
                          "so several replicas can share one store (default: on for a PostgreSQL --store)."),
        click.option("--leader-elect-lease-duration", default="15s", show_default=True, metavar="DURATION",
                     help="How long followers wait after the leader's last renewal before taking over."),
        click.option("--leader-elect-renew-deadline", default="10s", show_default=True, metavar="DURATION",
                     help="How long the leader retries renewing before it stops its controllers."),
        click.option("--leader-elect-retry-period", default="2s", show_default=True, metavar="DURATION",
                     help="How often candidates try to take, and the leader to renew, the Lease."),
        click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Start this many `stowage serve` replicas on this host, on the same --store "
                          "(PostgreSQL), with data dirs <data-dir>/replica-<i> and one kubeconfig naming all."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _is_shared_store(store_url: str | None) -> bool:
    return bool(store_url) and str(store_url).startswith(("postgresql", "postgres://"))


def leader_election_config(kwargs: dict[str, Any], store_url: str | None) -> Any:
    """The LeaderElectionConfig of the flags (popped from ``kwargs``), or None when election is off."""
    from storage.cli.workload_commands import parse_duration
    from storage.controllers.leaderelection import LeaderElectionConfig

    enabled = kwargs.pop("leader_elect")
    durations = {name: parse_duration(kwargs.pop(f"leader_elect_{name}"), f"--leader-elect-{name.replace('_', '-')}")
                 for name in ("lease_duration", "renew_deadline", "retry_period")}
    if enabled is None:
        enabled = _is_shared_store(store_url)
    if not enabled:
        return None
    config = LeaderElectionConfig(**durations)
    try:
        config.check()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return config


def _child_args(argv: list[str]) -> list[str]:
    """The serve flags the supervisor passes through unchanged to every replica."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _OWN_FLAGS:
            skip = _OWN_FLAGS[name] and "=" not in arg
            continue
        out.append(arg)
    return out


def _replica_cpu(choice: int | None, index: int) -> str:
    """The ``--api-server-cpu`` of replica ``index``."""
    from storage.system.affinity import process_cpus

    if choice is None:
        return "none"
    if choice >= 0:
        return str(choice)
    cpus = sorted(process_cpus())
    return str(cpus[index % len(cpus)])


def run_replicas(count: int, data_dir: str, listen: str, store_url: str | None, encryption_config: str | None,
                 log_format: str, files: tuple[str, ...] = (), api_server_cpu: int | None = -1) -> None:
    """Start ``count`` replicas and supervise them until SIGINT/SIGTERM, which stops them all.

    ``api_server_cpu`` as ``--api-server-cpu`` says (-1: auto); with auto the replicas take the allowed
    CPUs in turn, as each picking the least busy one at start would put them all on the same one."""
    from storage.cli.up import configure_logging, lock_data_dir, parse_listen
    from storage.client.kubeconfig import load_access, write_kubeconfig
    from storage.store.encryption import ensure_config
    from storage.system.signals import stop_on_signals, wait_until_set

    if not _is_shared_store(store_url):
        raise CommandError("--replicas: replicas need one shared store: pass --store postgresql://...")
    host, port = parse_listen(listen)
    configure_logging(log_format)
    root = Path(data_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    lock = lock_data_dir(root, "stowage serve --replicas")
    encryption = str(Path(encryption_config).expanduser().resolve()) if encryption_config else str(ensure_config(root))
    passthrough = _child_args(sys.argv[sys.argv.index("serve") + 1:] if "serve" in sys.argv else [])
    shown = f"[{host}]" if ":" in host else host
    stop = threading.Event()
    children: list[subprocess.Popen[str]] = []
    ready: dict[int, dict[str, Any]] = {}
    all_ready = threading.Event()

    # structlog's own writer: it shares the supervisor's lock on stderr, so lines never interleave.
    out = structlog.PrintLogger(file=sys.stderr)

    def pump(index: int, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                out.msg(line.rstrip("\n"))
                continue
            # Each replica's lines say which it is; only the supervisor says "stowage is ready", for all.
            record["replica"] = index
            if record.get("event") == "stowage is ready":
                record["event"] = "replica is ready"
                ready[index] = record
                if len(ready) == count:
                    all_ready.set()
            out.msg(json.dumps(record))
        code = proc.wait()
        if not stop.is_set():
            log.error("replica exited", replica=index, pid=proc.pid, code=code)
        if index not in ready:
            all_ready.set()  # wake the supervisor: this one will never be ready

    with stop_on_signals(stop):
        try:
            for index in range(count):
                child_dir = root / f"replica-{index}"
                child_listen = f"{shown}:{port + index if port else 0}"
                args = [sys.executable, "-m", "storage.cli", "serve", "--data-dir", str(child_dir),
                        "--listen", child_listen, "--log-format", "json",
                        "--encryption-provider-config", encryption,
                        "--api-server-cpu", _replica_cpu(api_server_cpu, index), *passthrough]
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
                children.append(proc)
                threading.Thread(target=pump, args=(index, proc), name=f"replica-{index}", daemon=True).start()
            while not stop.is_set() and not all_ready.wait(0.5):
                pass
            if len(ready) < count:
                if stop.is_set():
                    return
                raise CommandError("--replicas: a replica exited before it was ready (see its log above)")
            servers = [str(ready[i]["server"]) for i in range(count)]
            first = load_access(str(ready[0]["kubeconfig"]))
            kubeconfig = write_kubeconfig(root / "kubeconfig", servers[0], first.token, ca_data=first.ca_data,
                                          servers=servers)
            if files:
                from storage.cli.up import _apply_manifests

                _apply_manifests(files, kubeconfig)
            log.info("stowage is ready", server=servers[0], servers=servers, kubeconfig=str(kubeconfig),
                     pids=[p.pid for p in children], hint=f"export KUBECONFIG={kubeconfig}; stowage get pv")
            wait_until_set(stop)
            log.info("stopping")
        finally:
            stop.set()
            for proc in children:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in children:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            lock.release()
            log.info("stopped")
