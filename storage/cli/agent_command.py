"""``stowage agent``: the node agent for one host, talking to a control plane through its kubeconfig."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import click
import httpx
import structlog

from storage.cli.errors import CommandError
from storage.cli.up import configure_logging, default_data_dir, parse_attach_limits
from storage.system.signals import stop_on_signals, wait_until_set

log = structlog.get_logger(__name__)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise CommandError(f'{option}: Invalid value: "{value}": expected KEY=VALUE')
        out[key] = val
    return out


def _check_pod_network(pod_cidr: str, pod_interface: str | None) -> None:
    import ipaddress

    try:
        network = ipaddress.ip_network(pod_cidr)
    except ValueError as exc:
        raise CommandError(f'--pod-cidr: Invalid value: "{pod_cidr}": {exc}') from None
    if pod_interface is None and not network.is_loopback:
        raise CommandError(f'--pod-cidr: Invalid value: "{pod_cidr}": a range outside 127.0.0.0/8 needs '
                           "--pod-interface (the interface on the hosts' network that pod addresses go on)")
    if pod_interface is not None:
        from storage.system.netaddr import interface_exists

        if network.is_loopback or network.version != 4:
            raise CommandError(f'--pod-cidr: Invalid value: "{pod_cidr}": with --pod-interface the range must be '
                               "routable IPv4 (not loopback)")
        if not interface_exists(pod_interface):
            raise CommandError(f'--pod-interface: Invalid value: "{pod_interface}": no such network interface')


@click.command("agent")
@click.option("--node", "node_name", default=None, help="Node name (default: this host's name).")
@click.option("--kubeconfig", "kubeconfig", default=None,
              help="The node's own kubeconfig (client certificate), written after bootstrapping "
                   "(default: <data-dir>/pki/kubeconfig).")
@click.option("--bootstrap-kubeconfig", "bootstrap_kubeconfig", default=None,
              help="Kubeconfig with a bootstrap token (`stowage token create`), used to obtain the node's "
                   "certificate when --kubeconfig is missing or expiring.")
@click.option("--data-dir", default=None, help="Agent state: pod directories, mounts, logs (default: <stowage data dir>/agent).")
@click.option("--pool", "pools", multiple=True, metavar="NAME=PATH[:SIZE]", help="A local storage pool (repeatable).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A node label (repeatable).")
@click.option("--zone", default=None, help="topology.kubernetes.io/zone of this node.")
@click.option("--provider-id", default=None, metavar="ID",
              help="The Node's spec.providerID, as the cloud names this VM (aws:///<zone>/<instance-id>).")
@click.option("--address", default="127.0.0.1", show_default=True, help="This node's address (the agent listens here).")
@click.option("--port", default=0, show_default=True, help="The agent's HTTP port (0: any free port).")
@click.option("--heartbeat", default=10.0, show_default=True, help="Seconds between Lease renewals; the Node status is written when it changes or every 5 minutes.")
@click.option("--host-path-prefix", "host_paths", multiple=True, help="Host path prefix that hostPath volumes may use (repeatable).")
@click.option("--pod-cidr", default="127.1.0.0/16", show_default=True,
              help="Range this node's pods take their addresses from: loopback (distinct per node on one host), "
                   "or a range on the hosts' network together with --pod-interface.")
@click.option("--pod-interface", default=None, metavar="IFACE",
              help="Assign each pod's address to this interface so other hosts reach the pod "
                   "(--pod-cidr is then this node's share of the hosts' network).")
@click.option("--dev-disk-dir", default="/dev/disk", show_default=True, type=click.Path(file_okay=False),
              help="Where attached cloud disks appear as by-id/ and azure/ links (udev's directory on real nodes).")
@click.option("--attach-limit", "attach_limits", multiple=True, metavar="KEY=N",
              help="Volumes of one kind this node can take, e.g. attachable-volumes-aws-ebs=25 (repeatable; "
                   "default: each disk plugin's own limit).")
@click.option("--volume-plugin-dir", envvar="STOWAGE_VOLUME_PLUGIN_DIR", default=None, type=click.Path(file_okay=False),
              help="FlexVolume drivers, as <vendor>~<driver>/<driver> (default: "
                   "/usr/libexec/kubernetes/kubelet-plugins/volume/exec).")
@click.option("--csi-driver", "csi_drivers", multiple=True, metavar="DRIVER=unix:///PATH",
              help="A CSI driver's Node service on this host (repeatable).")
@click.option("--container-log-max-size", default="10Mi", show_default=True, metavar="QUANTITY",
              help="A container's log is rotated past this size (as the kubelet's flag of that name; 0: never).")
@click.option("--container-log-max-files", type=click.IntRange(min=2), default=5, show_default=True,
              help="How many files of a container's log are kept, the current one included (the kubelet's flag).")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="json")
def agent_command(node_name: str | None, kubeconfig: str | None, bootstrap_kubeconfig: str | None,
                  data_dir: str | None, pools: tuple[str, ...], provider_id: str | None,
                  labels: tuple[str, ...], zone: str | None, address: str, port: int, heartbeat: float,
                  host_paths: tuple[str, ...], pod_cidr: str, dev_disk_dir: str, attach_limits: tuple[str, ...],
                  log_format: str, volume_plugin_dir: str | None = None, csi_drivers: tuple[str, ...] = (),
                  pod_interface: str | None = None, container_log_max_size: str = "10Mi",
                  container_log_max_files: int = 5) -> None:
    """Run the node agent in the foreground until Ctrl-C or SIGTERM."""
    from storage.system.memory import limit_arenas

    limit_arenas()  # before any thread starts: the agent's RSS stays near its live objects (PF44)
    if csi_drivers:
        from provisioners.csi import parse_driver_flag
        from volume_plugins.csi import register_node_driver

        for value in csi_drivers:
            try:
                register_node_driver(*parse_driver_flag(value))
            except Exception as exc:
                raise CommandError(f"--csi-driver: {exc}") from None
    from storage.agent.agent import AgentConfig
    from storage.agent.setup import default_node_name, default_pool, parse_pool, start_agent
    from storage.client import Client
    from storage.agent.credentials import node_credentials
    from storage.client.kubeconfig import load_access
    from storage.errors import StowageError

    if volume_plugin_dir:  # the node plugin and the in-process FlexVolume attacher read the same directory
        os.environ["STOWAGE_VOLUME_PLUGIN_DIR"] = str(Path(volume_plugin_dir).resolve())
    limits = parse_attach_limits(attach_limits)
    _check_pod_network(pod_cidr, pod_interface)
    log_max_bytes = _log_max_bytes(container_log_max_size)
    configure_logging(log_format)
    root = Path(data_dir) if data_dir else Path(default_data_dir()) / "agent"
    try:
        pool_specs = [parse_pool(p, root) for p in pools] or [default_pool(root)]
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    name = node_name or default_node_name()

    def bootstrap() -> Any:
        if not bootstrap_kubeconfig:
            raise CommandError("--bootstrap-kubeconfig: the agent has no node certificate yet; pass a bootstrap "
                               "kubeconfig (made with `stowage token create --bootstrap-kubeconfig FILE`)")
        try:
            return load_access(bootstrap_kubeconfig)
        except (OSError, ValueError) as exc:
            raise CommandError(f"--bootstrap-kubeconfig: {exc}") from None

    from storage.system.dirlock import DirLock, DirLocked

    try:
        # Refused before anything else (a bootstrap included) when another agent runs on this dir;
        # the agent takes the lock for good when it starts.
        DirLock(root, "stowage agent").acquire().release()
    except DirLocked as exc:
        raise CommandError(str(exc)) from None
    try:
        creds = node_credentials(name, root / "pki", address, bootstrap, Path(kubeconfig) if kubeconfig else None)
    except (StowageError, httpx.HTTPError) as exc:
        raise CommandError(f"cannot obtain the node's credentials: {exc}") from None
    server = creds.access.server
    config = AgentConfig(node_name=name, data_dir=root, pools=pool_specs,
                         labels=_pairs(labels, "--label"), zone=zone, provider_id=provider_id, host_ip=address, listen_host=address,
                         listen_port=port, heartbeat_seconds=heartbeat, host_path_prefixes=host_paths,
                         pod_ip_range=pod_cidr, pod_interface=pod_interface, tls=creds.tls, dev_disk_dir=Path(dev_disk_dir), attach_limits=limits,
                         private_paths=(default_data_dir(), *([kubeconfig] if kubeconfig else [])),
                         container_log_max_bytes=log_max_bytes, container_log_max_files=container_log_max_files)
    stop = threading.Event()
    from storage.system.dirlock import DirLocked

    with stop_on_signals(stop):
        try:
            thread = start_agent(Client.from_access(creds.access), config, None, stop)
        except DirLocked as exc:
            raise CommandError(str(exc)) from None
        log.info("agent running", node=config.node_name, server=server)
        wait_until_set(stop)
        thread.join(timeout=30)


UP_STOP_SECONDS = 30.0


def _stop_up(root: Path, pid_file: Path, timeout: float) -> None:
    """SIGTERM to the `stowage up` the pid file names, and wait until it has ended. Only a process that
    holds the data dir's lock is signalled, through a pidfd that pins it: a pid file left by an up that
    crashed may name a process that reused its pid, which is not ours to stop. The end is waited for on
    the pidfd (it becomes readable when the process ends), not by asking every 0.1 s."""
    import os
    import select

    from storage.system.dirlock import holder_pid

    try:
        pid = int(pid_file.read_text().strip())
        pidfd = os.pidfd_open(pid)
    except (ValueError, ProcessLookupError):
        return  # nothing runs under that pid: a crashed up's file
    try:
        if holder_pid(root) != pid:
            return  # the pid was reused: that process is not `stowage up` on this data dir
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(int(timeout * 1000)):
            raise CommandError(f"stowage up (pid {pid}) did not stop within {timeout:g}s")
    except ProcessLookupError:
        return  # it ended by itself meanwhile
    finally:
        os.close(pidfd)


@click.command("down")
@click.option("--data-dir", default=default_data_dir, show_default="~/.stowage or $STOWAGE_DATA_DIR")
@click.option("--grace", default=10.0, show_default=True, help="Seconds each container gets between SIGTERM and SIGKILL.")
def down_command(data_dir: str, grace: float) -> None:
    """Stop `stowage up` on DATA_DIR and everything it runs: pods, mounts, loop devices (data is kept)."""
    from storage.agent.teardown import stop_node

    root = Path(data_dir).expanduser().resolve()
    if not root.exists():
        raise CommandError(f"--data-dir: {root} does not exist")
    pid_file = root / "up.pid"
    if pid_file.exists():
        _stop_up(root, pid_file, UP_STOP_SECONDS)
        pid_file.unlink(missing_ok=True)
    from storage.system.dirlock import DirLock, DirLocked

    # Whatever still holds the data dir or its agent dir (a `serve`, an `agent` started by hand) is
    # not ours to tear down under: refuse rather than pull mounts from under a running agent.
    locks = []
    try:
        for directory, program in ((root, "stowage down"), (root / "agent", "stowage down")):
            locks.append(DirLock(directory, program).acquire())
    except DirLocked as exc:
        for held in locks:
            held.release()
        raise CommandError(str(exc)) from None
    try:
        counts = stop_node(root, root / "agent", grace)
    finally:
        for held in locks:
            held.release()
    click.echo(f"stopped {counts['pods']} pod(s) ({counts['containers']} container(s)), "
               f"released {counts['mounts']} mount(s) and {counts['loop_devices']} loop device(s)")
    left = counts["left"]
    if any(left.values()):
        lines = [f"  {what.replace('_', ' ')}: {', '.join(items)}" for what, items in left.items() if items]
        raise CommandError("these could not be released (still in use?):\n" + "\n".join(lines))


def _log_max_bytes(value: str) -> int:
    from storage.api.quantity import parse_quantity

    try:
        size = parse_quantity(value)
    except ValueError:
        size = -1
    if size < 0 or size != int(size):
        raise CommandError(f'--container-log-max-size: Invalid value: "{value}": must be a whole, non-negative '
                           "number of bytes (10Mi, 50M, 0)")
    return int(size)
