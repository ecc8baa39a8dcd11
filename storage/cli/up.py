"""``stowage up`` and ``stowage serve``: run a control plane in the foreground.

``up`` is the single-host default (embedded SQLite, API server, controllers
and, later, the local node agent in one process); ``serve`` is the same
control plane without the agent, for many hosts sharing one PostgreSQL.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import click
import structlog

from storage.cli.errors import CommandError
from storage.cli.logging_setup import configure_logging
from storage.cli.replicas import leader_election_config, leader_election_options, run_replicas
from storage.system.signals import stop_on_signals, wait_until_set

DEFAULT_LISTEN = "127.0.0.1:6443"
DATA_DIR_ENV = "STOWAGE_DATA_DIR"
DB_FILE = "stowage.db"
KUBECONFIG_FILE = "kubeconfig"

log = structlog.get_logger("stowage.up")


def default_data_dir() -> str:
    return os.environ.get(DATA_DIR_ENV) or str(Path.home() / ".stowage")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise CommandError(f'--listen: expected HOST:PORT, got "{value}"')
    try:
        port = int(port_text)
    except ValueError:
        raise CommandError(f'--listen: port must be a number, got "{port_text}"') from None
    if not 0 <= port <= 65535:
        raise CommandError(f"--listen: port must be between 0 and 65535, got {port}")
    return host.strip("[]"), port


def _redact(url: str) -> str:
    """A store URL without its password, fit for a log line."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


@dataclass
class ControlPlane:
    """Everything ``up``/``serve`` started, so that shutdown can stop it in reverse order."""

    store: Any
    server: Any
    server_url: str
    kubeconfig: Path
    stop: threading.Event
    threads: list[threading.Thread]
    lock: Any = None  # the data dir's DirLock, held until shutdown

    def shutdown(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
            if thread.is_alive():
                log.warning("thread did not stop in time", thread=thread.name)
        _stop_server(self.server)
        self.store.close()
        if self.lock is not None:
            self.lock.release()


def _stop_server(server: Any) -> None:
    for method in ("stop", "shutdown", "close"):
        fn = getattr(server, method, None)
        if callable(fn):
            fn()
            return


def _server_url(server: Any, host: str, port: int) -> str:
    url = getattr(server, "url", None)
    if isinstance(url, str) and url:
        return url
    real_port = getattr(server, "port", None) or port
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{real_port}"


def _start_controllers(store: Any, stop: threading.Event, options: Any = None,
                       leader_election: Any = None) -> list[threading.Thread]:
    try:
        manager = importlib.import_module("storage.controllers.manager")
    except ModuleNotFoundError as exc:
        if exc.name != "storage.controllers.manager":
            raise
        log.warning("no controllers present: objects are stored but nothing reconciles them")
        return []
    run: Callable[..., Any] = getattr(manager, "run_controllers")
    if leader_election is not None:  # replicas on one store: controllers only on the Lease holder (HA1)
        from storage.controllers.leaderelection import run_elected_manager

        thread = threading.Thread(target=_guarded(lambda: run_elected_manager(store, stop, leader_election, options)),
                                  name="leader-election", daemon=True)
        thread.start()
        return [thread]
    thread = threading.Thread(target=_guarded(lambda: run(store, stop, options=options)), name="controllers", daemon=True)
    thread.start()
    log.info("controllers started")
    return [thread]


def _guarded(fn: Callable[..., Any], *args: Any) -> Callable[[], None]:
    def body() -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("controllers stopped with an error")

    return body


def _agent_tls(server: Any) -> Any:
    """How the control plane calls node agents: TLS with the API server's agent-client certificate."""
    tls = server.tls.pki.agent_client_context() if getattr(server, "tls", None) is not None else None
    if tls is None and getattr(server, "data_dir", None) is not None:
        from storage.apiserver.tls import load_or_create_pki

        tls = load_or_create_pki(server.data_dir).agent_client_context()
    return tls


def _register_local_provisioner(store: Any, server: Any) -> None:
    """The local provisioner calls agents as the control plane: TLS, with the API server's agent-client cert."""
    from provisioners import registry
    from provisioners.local import LocalProvisioner
    from storage.errors import NotFound

    def node_lookup(name: str) -> dict[str, Any] | None:
        try:
            return store.get("nodes", "", name)
        except NotFound:
            return None

    local = LocalProvisioner(nodes=node_lookup, tls=_agent_tls(server))
    registry.register(local)
    # Backups (LS21) reach agents through the local provisioner and look for a volume's node among all.
    from provisioners.backup import BackupSnapshotter

    registry.register(BackupSnapshotter(local, node_lister=lambda: store.list("nodes")[0]))
    # EBS detach is told only a node's name; the lookup finds its instance (spec.providerID) after a restart.
    from provisioners.aws_ebs import AwsEbsProvisioner

    registry.register(AwsEbsProvisioner(nodes=node_lookup))


def _local_bootstrap(store: Any, server_url: str, data_dir: Path) -> Any:
    """Bootstrap credentials for this host's own agent: a short-lived bootstrap token, minted in the store."""
    from storage.api.bootstrap_tokens import new_bootstrap_token
    from storage.apiserver.tls import load_or_create_pki
    from storage.client.kubeconfig import ClusterAccess

    token, secret = new_bootstrap_token(3600, "the local agent of stowage up")
    store.create("secrets", secret)
    return ClusterAccess(server_url, token, ca_data=load_or_create_pki(data_dir).ca_pem)


@dataclass(frozen=True)
class LocalAgentOptions:
    """What `stowage up` passes to its own node agent (the `stowage agent` flags of the same names)."""

    dev_disk_dir: Path = Path("/dev/disk")
    attach_limits: dict[str, int] = field(default_factory=dict)
    provider_id: str | None = None  # the Node's spec.providerID: how a cloud attacher finds this VM
    zone: str | None = None  # topology.kubernetes.io/zone of this node


def parse_attach_limits(values: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``--attach-limit attachable-volumes-aws-ebs=25`` (repeatable) as a dict (AD3)."""
    out: dict[str, int] = {}
    for value in values:
        key, sep, number = value.partition("=")
        if not sep or not key.startswith("attachable-volumes-") or len(key) == len("attachable-volumes-"):
            raise CommandError(f'--attach-limit: Invalid value: "{value}": expected attachable-volumes-<plugin>=N')
        try:
            count = int(number)
        except ValueError:
            count = -1
        if count < 0:
            raise CommandError(f'--attach-limit: Invalid value: "{value}": the limit must be a whole number >= 0')
        out[key] = count
    return out


def _start_local_agent(store: Any, server_url: str, data_dir: Path, stop: threading.Event,
                       host_path_prefixes: tuple[str, ...] = (),
                       options: LocalAgentOptions | None = None) -> list[threading.Thread]:
    """Start the node agent for this host: registers a Node, runs the pods placed on it.

    It has its own identity (``system:node:<name>``), obtained through a bootstrap token like any other node's,
    never the admin token."""
    from storage.agent.agent import AgentConfig
    from storage.agent.credentials import node_credentials
    from storage.agent.setup import default_node_name, default_pool, start_agent
    from storage.client import Client

    node_name = default_node_name()
    agent_dir = data_dir / "agent"
    creds = node_credentials(node_name, agent_dir / "pki", "127.0.0.1",
                             lambda: _local_bootstrap(store, server_url, data_dir), server=server_url)
    config = AgentConfig(node_name=node_name, data_dir=agent_dir, pools=[default_pool(data_dir)],
                         heartbeat_seconds=10.0, tls=creds.tls,
                         # hostPath volumes may use the data dir's own hostpath area and what the admin allows.
                         host_path_prefixes=(str(data_dir / "hostpath"), *host_path_prefixes),
                         private_paths=(str(data_dir),),
                         dev_disk_dir=(options or LocalAgentOptions()).dev_disk_dir,
                         attach_limits=dict((options or LocalAgentOptions()).attach_limits),
                         provider_id=(options or LocalAgentOptions()).provider_id,
                         zone=(options or LocalAgentOptions()).zone)
    from storage.system.dirlock import DirLocked

    try:
        thread = start_agent(Client.from_access(creds.access), config, None, stop)
    except DirLocked as exc:
        raise CommandError(str(exc)) from None
    log.info("local node agent started", node=config.node_name)
    return [thread]


def _apply_manifests(files: tuple[str, ...], kubeconfig: Path) -> None:
    """Apply ``-f`` manifests through the API, exactly as ``stowage apply`` would."""
    from storage.cli.main import main as cli_main

    args = ["apply", "--kubeconfig", str(kubeconfig)]
    for f in files:
        args += ["-f", f]
    code = cli_main(args)
    if code != 0:
        log.error("applying manifests failed", files=list(files))
    else:
        log.info("manifests applied", files=list(files))


def open_encryption(data_dir: Path, config_file: str | None) -> Any:
    """The encryption at rest for Secrets: ``config_file``, or the data dir's own (made on first start)."""
    from storage.store.encryption import EncryptionConfigError, ensure_config, load_config

    path = Path(config_file).expanduser() if config_file else ensure_config(data_dir)
    try:
        return load_config(path)
    except EncryptionConfigError as exc:
        raise CommandError(f"--encryption-provider-config: {exc}") from None


def lock_data_dir(data_dir: Path, program: str) -> Any:
    from storage.system.dirlock import DirLock, DirLocked

    try:
        return DirLock(data_dir, program).acquire()
    except DirLocked as exc:
        raise CommandError(str(exc)) from None


def open_data_store(data_dir: Path, store_url: str | None, encryption_config: str | None) -> Any:
    """The store of ``up``/``serve`` (and of the maintenance commands), Secrets encrypted at rest."""
    from storage.errors import StowageError
    from storage.store import open_store

    url = store_url or str(data_dir / DB_FILE)
    encryption = open_encryption(data_dir, encryption_config)
    try:
        store = open_store(url, encryption=encryption)
    except ValueError as exc:
        raise CommandError(f"--store: {exc}") from None
    except StowageError as exc:  # e.g. locked by another process past the busy timeout
        raise CommandError(f"cannot open the store {_redact(url)}: {exc.message}") from None
    log.info("store opened", store=_redact(url))
    return store


def start_control_plane(
    data_dir: Path, listen: str, store_url: str | None, with_agent: bool, stop: threading.Event,
    host_path_prefixes: tuple[str, ...] = (), encryption_config: str | None = None,
    pod_security_default: str = "baseline", tls_options: Any = None, controller_options: Any = None,
    agent_options: LocalAgentOptions | None = None, leader_election: Any = None,
    api_server_cpu: int | None = None,
) -> ControlPlane:
    from storage.apiserver.admission import default_admission
    from storage.apiserver.server import start_in_thread
    from storage.controllers.base import ControllerOptions

    # PS1: the pods controllers write themselves are held to the API server's default level too.
    options = replace(controller_options or ControllerOptions(), pod_security_default=pod_security_default)

    host, port = parse_listen(listen)  # checked again here for callers other than run_foreground
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # holds the token file and the database
    lock = lock_data_dir(data_dir, "stowage up" if with_agent else "stowage serve")
    try:
        store = open_data_store(data_dir, store_url, encryption_config)
    except BaseException:
        lock.release()
        raise
    if getattr(store, "corrupt", None):
        log.error("the database is corrupt: the API serves reads only and refuses every write",
                  problem=store.corrupt, recovery="stop stowage, then `stowage restore FILE` from a backup")
    kubeconfig = data_dir / KUBECONFIG_FILE
    if leader_election is not None:
        # Replicas share one store: they must also share the admin token, the CA and the signing keys (HA7).
        from storage.apiserver.cluster_credentials import CredentialsUnreadable, share_cluster_credentials

        try:
            share_cluster_credentials(store, data_dir)
        except CredentialsUnreadable as exc:
            store.close()
            lock.release()
            raise CommandError(str(exc)) from None
    try:
        # Makes the admin token on first start and writes the kubeconfig once the port is known.
        admission = default_admission(pod_security_default,
                                      not_ready_toleration_seconds=options.default_not_ready_toleration_seconds,
                                      unreachable_toleration_seconds=options.default_unreachable_toleration_seconds)
        server = start_in_thread(store, host=host, port=port, data_dir=data_dir, kubeconfig=kubeconfig,
                                 pod_security_default=pod_security_default, tls_options=tls_options,
                                 admission=admission, cpu=api_server_cpu)
    except ValueError as exc:
        store.close()
        lock.release()
        raise CommandError(str(exc)) from None
    except OSError as exc:
        store.close()
        lock.release()
        raise CommandError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    except BaseException:
        store.close()
        lock.release()
        raise
    server_url = _server_url(server, host, port)
    plane = ControlPlane(store, server, server_url, kubeconfig, stop, [], lock)
    try:
        _register_local_provisioner(store, server)
        # The autoscaler reads the pods' usage from the agents, as the API server's metrics API does (HPA4).
        from storage.apiserver.metrics import pod_usage

        options = replace(options, pod_usage=functools.partial(pod_usage, store, _agent_tls(server)))
        plane.threads += _start_controllers(store, stop, options, leader_election)
        if with_agent:
            plane.threads += _start_local_agent(store, server_url, data_dir, stop, host_path_prefixes, agent_options)
    except BaseException:
        plane.shutdown()
        raise
    return plane


def _pod_line(pod: dict[str, Any]) -> str:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    containers = status.get("containerStatuses") or []
    ready = sum(1 for c in containers if c.get("ready"))
    return (f"pod {meta.get('namespace')}/{meta.get('name')} is {status.get('phase', 'Pending')} "
            f"({ready}/{len((pod.get('spec') or {}).get('containers') or [])} ready) on {((pod.get('spec') or {}).get('nodeName'))} "
            f"at {status.get('podIP', '-')}")


def _report_pods(store: Any, stop: threading.Event) -> None:
    """Say when each pod starts running or becomes ready, so `up -f` shows its workload come up."""
    from storage.api.conditions import is_true

    shown: dict[str, tuple[str, bool]] = {}
    items, revision = store.list("pods")
    with store.watch("pods", since=revision) as watcher:
        pending = list(items)
        while not stop.is_set():
            for pod in pending:
                uid = (pod.get("metadata") or {}).get("uid", "")
                phase = (pod.get("status") or {}).get("phase", "Pending")
                ready = is_true(pod, "Ready")
                if phase in ("Running", "Succeeded", "Failed") and shown.get(uid) != (phase, ready):
                    shown[uid] = (phase, ready)
                    log.info(_pod_line(pod))
            event = watcher.get(timeout=1.0)
            if event is None and stop.is_set():
                return
            pending = [event.object] if event is not None and event.type != "DELETED" else []


def run_foreground(data_dir: str, listen: str, store_url: str | None, files: tuple[str, ...],
                   log_format: str, with_agent: bool, host_path_prefixes: tuple[str, ...] = (),
                   encryption_config: str | None = None, pod_security_default: str = "baseline",
                   tls_options: Any = None, controller_options: Any = None,
                   agent_options: LocalAgentOptions | None = None, leader_election: Any = None,
                   api_server_cpu: int | None = None) -> None:
    parse_listen(listen)  # a typo should fail before anything is created
    configure_logging(log_format)
    stop = threading.Event()
    with stop_on_signals(stop):
        root = Path(data_dir).expanduser().resolve()
        plane = start_control_plane(root, listen, store_url, with_agent, stop,
                                    tuple(str(Path(p).expanduser().resolve()) for p in host_path_prefixes),
                                    encryption_config, pod_security_default, tls_options, controller_options,
                                    agent_options, leader_election, api_server_cpu)
        pid_file = root / "up.pid"
        pid_file.write_text(f"{os.getpid()}\n")
        try:
            if files and not stop.is_set():
                _apply_manifests(files, plane.kubeconfig)
            log.info(
                "stowage is ready",
                server=plane.server_url,
                kubeconfig=str(plane.kubeconfig),
                hint=f"export KUBECONFIG={plane.kubeconfig}; stowage get pv",
            )
            if with_agent:
                threading.Thread(target=_report_pods, args=(plane.store, stop), name="pod-report", daemon=True).start()
            wait_until_set(stop)
            log.info("stopping")
        finally:
            plane.shutdown()
            pid_file.unlink(missing_ok=True)
            log.info("stopped")

_common = [
    click.option("--csi-controller", "csi_controllers", multiple=True, metavar="DRIVER=unix:///PATH",
                 help="A CSI driver's controller service: classes whose provisioner is DRIVER use it (repeatable)."),
    click.option("--data-dir", default=default_data_dir, show_default="~/.stowage or $STOWAGE_DATA_DIR",
                 help="Where the database, tokens and kubeconfig live."),
    click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT for the API (port 0: any free port)."),
    click.option("-f", "--filename", "files", multiple=True, metavar="FILE|DIR",
                 help="Manifests to apply once the API is ready."),
    click.option("--log-format", type=click.Choice(["console", "json"]), default=None,
                 help="Log format (default: console on a terminal, else JSON)."),
    click.option("--encryption-provider-config", "encryption_config", default=None, metavar="FILE",
                 help="EncryptionConfiguration for Secrets at rest (default: <data-dir>/encryption-config.yaml, "
                      "made with a fresh AES-GCM key on first start)."),
    click.option("--pod-security-default", type=click.Choice(["privileged", "baseline", "restricted"]),
                 default="baseline", show_default=True,
                 help="Pod Security level for namespaces without pod-security.kubernetes.io labels."),
    click.option("--tls-san", "tls_sans", multiple=True, metavar="NAME|IP",
                 help="Extra name or address for the serving certificate (repeatable)."),
    click.option("--tls-cert-file", default=None, metavar="PATH",
                 help="Serve with this certificate (chain) instead of one from the cluster CA."),
    click.option("--tls-private-key-file", default=None, metavar="PATH", help="The key of --tls-cert-file."),
    click.option("--client-ca-file", default=None, metavar="PATH",
                 help="Also accept client certificates signed by these CAs (the cluster CA is always accepted)."),
    click.option("--insecure-http", is_flag=True, default=False,
                 help="Serve plain HTTP (tokens travel unencrypted; stock kubectl will not send them)."),
    click.option("--api-server-cpu", default="auto", show_default=True, metavar="auto|none|CPU",
                 callback=lambda _ctx, _param, value: _api_server_cpu(value),
                 help="Keep the API server's threads on one CPU: auto picks the least busy one, none leaves them "
                      "free (they take turns on one interpreter lock, and spreading them only adds wake-ups "
                      "across CPUs). Pods and host commands are never pinned."),
    click.option("--node-monitor-grace-period", default="40s", show_default=True, metavar="DURATION",
                 help="How long a node's agent may stay silent before the node goes Ready=Unknown."),
    click.option("--node-eviction-rate", type=click.FloatRange(min=0), default=0.1, show_default=True,
                 help="Nodes per second, per zone, that get the NoExecute taint that evicts their pods."),
    click.option("--secondary-node-eviction-rate", type=click.FloatRange(min=0), default=0.01, show_default=True,
                 help="The same once a zone is partially disrupted (see --unhealthy-zone-threshold)."),
    click.option("--unhealthy-zone-threshold", type=click.FloatRange(min=0, max=1), default=0.55, show_default=True,
                 help="Share of not-Ready nodes (at least 3) that makes a zone partially disrupted."),
    click.option("--large-cluster-size-threshold", type=click.IntRange(min=0), default=50, show_default=True,
                 help="A partially disrupted zone of at most this many nodes stops evicting."),
    click.option("--default-not-ready-toleration-seconds", type=click.IntRange(min=0), default=300, show_default=True,
                 help="tolerationSeconds given to pods without a node.kubernetes.io/not-ready toleration."),
    click.option("--default-unreachable-toleration-seconds", type=click.IntRange(min=0), default=300,
                 show_default=True,
                 help="tolerationSeconds given to pods without a node.kubernetes.io/unreachable toleration."),
    click.option("--attach-detach-max-wait-for-unmount", "max_wait_for_unmount", default="6m", show_default=True,
                 metavar="DURATION",
                 help="How long a disk stays attached to a not-Ready node that still reports it in use before "
                      "it is detached anyway (Kubernetes' maxWaitForUnmountDuration)."),
    click.option("--horizontal-pod-autoscaler-sync-period", "hpa_sync_period", default="15s", show_default=True,
                 metavar="DURATION", help="How often each HorizontalPodAutoscaler is evaluated."),
    click.option("--horizontal-pod-autoscaler-downscale-stabilization", "hpa_downscale_stabilization", default="5m",
                 show_default=True, metavar="DURATION",
                 help="How far back an autoscaler looks for a higher recommendation before it scales down."),
]


def _api_server_cpu(value: str) -> int | None:
    from storage.system.affinity import check_allowed, parse_cpu_choice

    try:
        cpu = parse_cpu_choice(value)
        if cpu is not None and cpu >= 0:
            check_allowed(cpu)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return cpu


def _register_csi(controllers: tuple[str, ...], node_drivers: tuple[str, ...] = ()) -> None:
    """--csi-controller DRIVER=unix:///path (control plane) and, for up's own node, --csi-driver (both: CS4)."""
    from storage.errors import PermanentError

    try:
        from provisioners.csi import parse_driver_flag, register_driver
        from volume_plugins.csi import register_node_driver
    except ImportError as exc:
        if controllers or node_drivers:
            raise CommandError(f"--csi-controller/--csi-driver need the `csi` extra (grpcio): {exc}") from None
        return
    try:
        for value in controllers:
            register_driver(*parse_driver_flag(value))
        named = {parse_driver_flag(c)[0] for c in controllers}
    except PermanentError as exc:
        raise CommandError(str(exc)) from None
    from provisioners.csi import unregister_driver
    from volume_plugins.csi import add_registration_listener

    def mirror(name: str, endpoint: str | None) -> None:
        # One host: a driver registered on up's node (flag or registration socket) also serves the
        # control plane, unless --csi-controller named another endpoint for it.
        if name in named:
            return
        if endpoint is None:
            unregister_driver(name)
        else:
            register_driver(name, endpoint)

    add_registration_listener(mirror)
    try:
        for value in node_drivers:
            register_node_driver(*parse_driver_flag(value))
    except PermanentError as exc:
        raise CommandError(str(exc)) from None


def _controller_options(kwargs: dict[str, Any]) -> Any:
    """The node lifecycle flags (kube-controller-manager's and kube-apiserver's names) as ControllerOptions."""
    from storage.cli.workload_commands import parse_duration
    from storage.controllers.base import ControllerOptions

    grace = parse_duration(kwargs.pop("node_monitor_grace_period"), "--node-monitor-grace-period")
    if grace <= 0:
        raise CommandError("--node-monitor-grace-period: must be greater than zero")
    max_wait = parse_duration(kwargs.pop("max_wait_for_unmount"), "--attach-detach-max-wait-for-unmount")
    if max_wait <= 0:
        raise CommandError("--attach-detach-max-wait-for-unmount: must be greater than zero")
    # Absent when a caller builds the options without the autoscaler's flags: kube-controller-manager's defaults.
    hpa_sync = parse_duration(kwargs.pop("hpa_sync_period", "15s"), "--horizontal-pod-autoscaler-sync-period")
    if hpa_sync <= 0:
        raise CommandError("--horizontal-pod-autoscaler-sync-period: must be greater than zero")
    hpa_window = parse_duration(kwargs.pop("hpa_downscale_stabilization", "5m"),
                                "--horizontal-pod-autoscaler-downscale-stabilization")
    if hpa_window < 0:
        raise CommandError("--horizontal-pod-autoscaler-downscale-stabilization: must not be negative")
    return ControllerOptions(
        node_monitor_grace_period=grace,
        max_wait_for_unmount=max_wait,
        hpa_sync_period=hpa_sync,
        hpa_downscale_stabilization=hpa_window,
        node_eviction_rate=kwargs.pop("node_eviction_rate"),
        secondary_node_eviction_rate=kwargs.pop("secondary_node_eviction_rate"),
        unhealthy_zone_threshold=kwargs.pop("unhealthy_zone_threshold"),
        large_cluster_size_threshold=kwargs.pop("large_cluster_size_threshold"),
        default_not_ready_toleration_seconds=kwargs.pop("default_not_ready_toleration_seconds"),
        default_unreachable_toleration_seconds=kwargs.pop("default_unreachable_toleration_seconds"),
    )


def _tls_options(kwargs: dict[str, Any]) -> Any:
    from storage.apiserver.tls import TLSOptions

    return TLSOptions(tuple(kwargs.pop("tls_sans")), kwargs.pop("tls_cert_file"), kwargs.pop("tls_private_key_file"),
                      kwargs.pop("client_ca_file"), kwargs.pop("insecure_http"))


def _with_common(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_common):
        f = option(f)
    return f


def _log_format(value: str | None) -> str:
    return value or ("console" if sys.stderr.isatty() else "json")


@click.command("up")
@_with_common
@click.option("--store", "store_url", default=None, help="Store URL (default: SQLite file in the data dir).")
@click.option("--host-path-prefix", "host_paths", multiple=True, metavar="PATH",
              help="Host path under which hostPath volumes are allowed (repeatable; default: only <data-dir>/hostpath).")
@click.option("--dev-disk-dir", default="/dev/disk", show_default=True, type=click.Path(file_okay=False),
              help="Where attached cloud disks appear as by-id/ and azure/ links (udev's directory on real nodes).")
@click.option("--attach-limit", "attach_limits", multiple=True, metavar="KEY=N",
              help="Volumes of one kind this node can take, e.g. attachable-volumes-aws-ebs=25 (repeatable; "
                   "default: each disk plugin's own limit).")
@click.option("--provider-id", default=None, metavar="ID",
              help="This node's spec.providerID on a cloud (aws:///<zone>/<instance-id>, gce://<project>/<zone>/<vm>), "
                   "so cloud disks can be attached to it.")
@click.option("--volume-plugin-dir", envvar="STOWAGE_VOLUME_PLUGIN_DIR", default=None, type=click.Path(file_okay=False),
              help="FlexVolume drivers, as <vendor>~<driver>/<driver> (default: "
                   "/usr/libexec/kubernetes/kubelet-plugins/volume/exec).")
@click.option("--zone", default=None, help="topology.kubernetes.io/zone of this node.")
@click.option("--csi-driver", "csi_drivers", multiple=True, metavar="DRIVER=unix:///PATH",
              help="A CSI driver running on this host (its Node service; also its controller unless "
                   "--csi-controller names another) (repeatable).")
def up_command(data_dir: str, listen: str, files: tuple[str, ...], log_format: str | None,
               encryption_config: str | None, pod_security_default: str, store_url: str | None,
               host_paths: tuple[str, ...], dev_disk_dir: str, attach_limits: tuple[str, ...],
               provider_id: str | None, zone: str | None, csi_drivers: tuple[str, ...] = (),
               volume_plugin_dir: str | None = None, **tls: Any) -> None:
    """Run a local control plane (and node agent) in the foreground until Ctrl-C."""
    api_server_cpu = tls.pop("api_server_cpu")
    if volume_plugin_dir:  # the node plugin and the in-process FlexVolume attacher read the same directory
        os.environ["STOWAGE_VOLUME_PLUGIN_DIR"] = str(Path(volume_plugin_dir).resolve())
    _register_csi(tls.pop("csi_controllers", ()), csi_drivers)
    controller_options = _controller_options(tls)
    agent_options = LocalAgentOptions(Path(dev_disk_dir), parse_attach_limits(attach_limits), provider_id, zone)
    run_foreground(data_dir, listen, store_url, files, _log_format(log_format), with_agent=True,
                   host_path_prefixes=host_paths, encryption_config=encryption_config,
                   pod_security_default=pod_security_default, tls_options=_tls_options(tls),
                   controller_options=controller_options, agent_options=agent_options,
                   api_server_cpu=api_server_cpu)


@click.command("serve")
@_with_common
@click.option("--store", "store_url", default=None,
              help="Store URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in the data dir).")
@leader_election_options
def serve_command(data_dir: str, listen: str, files: tuple[str, ...], log_format: str | None,
                  encryption_config: str | None, pod_security_default: str, store_url: str | None,
                  **tls: Any) -> None:
    """Run the control plane only (API server and controllers), for hosts that run `stowage agent`."""
    replicas = tls.pop("replicas")
    election = leader_election_config(tls, store_url)
    api_server_cpu = tls.pop("api_server_cpu")
    if replicas > 1:
        run_replicas(replicas, data_dir, listen, store_url, encryption_config, _log_format(log_format), files,
                     api_server_cpu)
        return
    _register_csi(tls.pop("csi_controllers", ()))
    controller_options = _controller_options(tls)
    run_foreground(data_dir, listen, store_url, files, _log_format(log_format), with_agent=False,
                   encryption_config=encryption_config, pod_security_default=pod_security_default,
                   tls_options=_tls_options(tls), controller_options=controller_options,
                   leader_election=election, api_server_cpu=api_server_cpu)
