"""`stowage agent --pod-cidr/--pod-interface` and the allocator behind them (rules MH2, MH6)."""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from storage.agent.runtime.ipam import InterfaceAllocator, LoopbackAllocator, make_allocator
from support import need_programs, need_root

Cli = object  # the fixture's type lives in the cli conftest


def test_mh6_a_routable_range_needs_an_interface_and_the_interface_must_exist(cli) -> None:  # type: ignore[no-untyped-def]
    """MH6: a bad pod network is refused before anything starts, naming the flag and the reason."""
    result = cli.run("agent", "--pod-cidr", "10.9.1.0/24", kubeconfig=False)
    assert result.code != 0 and '--pod-cidr: Invalid value: "10.9.1.0/24"' in result.err
    assert "needs --pod-interface" in result.err
    result = cli.run("agent", "--pod-cidr", "10.9.1.0/24", "--pod-interface", "nosuchif0", kubeconfig=False)
    assert result.code != 0 and '--pod-interface: Invalid value: "nosuchif0": no such network interface' in result.err
    result = cli.run("agent", "--pod-cidr", "127.9.0.0/24", "--pod-interface", "lo", kubeconfig=False)
    assert result.code != 0 and "must be routable IPv4" in result.err
    result = cli.run("agent", "--pod-cidr", "10.9.1.0/33", kubeconfig=False)
    assert result.code != 0 and '--pod-cidr: Invalid value: "10.9.1.0/33"' in result.err
    with pytest.raises(ValueError, match="must lie inside 127.0.0.0/8"):
        make_allocator(Path("/nonexistent"), "10.9.1.0/24")


def test_sv12_a_bad_container_log_size_is_refused_before_anything_starts(cli) -> None:  # type: ignore[no-untyped-def]
    for value in ("abc", "-1", "1.5"):
        result = cli.run("agent", "--container-log-max-size", value, kubeconfig=False)
        assert result.code != 0 and f'--container-log-max-size: Invalid value: "{value}"' in result.err, result.err


@pytest.fixture
def dummy_netns() -> str:
    need_root("network namespaces")
    need_programs("ip", "nsenter")
    name = f"stw-t-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


ALLOCATE = """
import json, sys
from pathlib import Path
from storage.agent.runtime.ipam import make_allocator
from storage.system import netaddr
pods = Path(sys.argv[1])
a = make_allocator(pods, "10.9.1.0/29", "eth0")
out = {"first": a.allocate("u1"), "again": a.allocate("u1"), "second": a.allocate("u2")}
out["on_if"] = sorted(netaddr.addresses("eth0"))
again = make_allocator(pods, "10.9.1.0/29", "eth0")   # a restarted agent
out["restarted"] = again.allocate("u1")
again.release("u1"); again.release("u1")              # twice: the second finds nothing to remove
out["after_release"] = sorted(netaddr.addresses("eth0"))
print(json.dumps(out))
"""


def test_mh2_addresses_are_assigned_skip_the_hosts_own_survive_a_restart_and_go_on_release(
        dummy_netns: str, tmp_path: Path) -> None:
    """MH2: an address on the interface per pod; the host's own address is never handed out; a restarted
    allocator keeps each pod's address; release takes it off (idempotently)."""
    import json
    import sys

    subprocess.run(["ip", "-n", dummy_netns, "addr", "add", "10.9.1.1/16", "dev", "eth0"], check=True)
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{dummy_netns}", sys.executable, "-c", ALLOCATE, str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first"] == "10.9.1.2" and out["again"] == "10.9.1.2" and out["second"] == "10.9.1.3"
    assert out["on_if"] == ["10.9.1.1", "10.9.1.2", "10.9.1.3"]
    assert out["restarted"] == "10.9.1.2"
    assert out["after_release"] == ["10.9.1.1", "10.9.1.3"]
    assert isinstance(make_allocator(tmp_path, "127.3.0.0/24"), LoopbackAllocator)
    assert InterfaceAllocator.__mro__[1] is LoopbackAllocator
