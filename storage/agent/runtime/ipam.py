"""Pod IPs: one address per pod, so pods on one host can listen on the same port.

On a single host the addresses are loopback ones (every 127/8 address is local, nothing to
assign). When pods on other hosts must reach them, the node's pod range lies on the hosts'
shared network and each pod's address is assigned to the node's interface on it (rule MH2).

Every agent on a machine (two ``stowage up``, an agent per test) hands out loopback
addresses from the same default range, so each one handed out is also claimed in a directory they
share (``<run dir>/podips/<address>``, naming the pod directory that records it), as CNI's
host-local IPAM does. An address bound by nothing yet (a pod whose server is still
starting) is then never given to a second pod on the machine.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

from storage.system import netaddr
from storage.system.durable import write_atomically

log = structlog.get_logger(__name__)

IP_FILE = "runtime/ip"
CLAIMS_DIR = "podips"  # under the machine-wide run directory
# PF90: how long one reading of the host's bound addresses serves allocations. Reading /proc/net/tcp walks
# the kernel's whole socket hash table: about 5 ms on a 24 GiB machine with two sockets open, under the
# machine-wide allocation lock, for every pod of a burst.
BUSY_FOR = 1.0


def holds_address(pod_dir: Path, address: str) -> bool:
    """Whether the pod directory still records ``address`` (a claim naming it is live). A record there that
    is not an address (damaged: emptied by a crash of the host) counts as holding it: the claim is then
    the only word left on the address the pod's containers use."""
    try:
        text = (pod_dir / IP_FILE).read_text().strip()
    except OSError:
        return False
    return text == address or not _is_address(text)


def _is_address(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


class LoopbackAllocator:
    """Hands out addresses from a loopback range, persisted in each pod's directory.

    The address is recorded in ``<pods dir>/<uid>/runtime/ip``; it stays taken as long
    as that file exists, so a restarted agent keeps every pod's address and never
    gives it to another pod while the pod directory exists.
    """

    def __init__(self, pods_dir: Path, network: str = "127.1.0.0/16", claims_dir: Path | None = None) -> None:
        """``claims_dir``: the machine-wide claims (None: this agent is alone with its range)."""
        self.pods_dir = pods_dir
        self.network = ipaddress.ip_network(network)
        self._check_range(network)
        self.claims_dir = claims_dir
        self._lock = threading.Lock()
        self._known: dict[int, str] | None = None
        self._busy_read: tuple[float, set[int]] | None = None  # (when, the addresses as ints)

    def _check_range(self, network: str) -> None:
        if not self.network.subnet_of(ipaddress.ip_network("127.0.0.0/8")):
            raise ValueError(f"ip_range: Invalid value: {network!r}: must lie inside 127.0.0.0/8 "
                             "(a routable range needs the pod interface)")

    @contextlib.contextmanager
    def _machine_lock(self) -> Iterator[None]:
        """Held while claims are read and written: other agents on this machine allocate too."""
        if self.claims_dir is None:
            yield
            return
        self.claims_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.claims_dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _pod_dir(self, uid: str) -> str:
        return str((self.pods_dir / uid).resolve())

    def _claimed_elsewhere(self, address: str, uid: str) -> bool:
        """Another pod directory (of any agent on the machine) has this address and still records it."""
        if self.claims_dir is None:
            return False
        try:
            owner = (self.claims_dir / address).read_text().strip()
        except OSError:
            return False
        return bool(owner) and owner != self._pod_dir(uid) and holds_address(Path(owner), address)

    def _claimed_by(self, uid: str) -> str | None:
        """The address whose claim names the pod's directory: reads every claim, so only for a damaged record."""
        assert self.claims_dir is not None
        pod_dir = self._pod_dir(uid)
        for claim in self.claims_dir.iterdir():
            try:
                if _is_address(claim.name) and claim.read_text().strip() == pod_dir:
                    return claim.name
            except OSError:
                continue
        return None

    def _claim(self, address: str, uid: str) -> None:
        if self.claims_dir is not None:
            write_atomically(self.claims_dir / address, self._pod_dir(uid))

    def _busy(self) -> set[str]:
        return addresses_in_use()

    def _busy_numbers(self, fresh: bool) -> set[int]:
        """``_busy`` as ints, read again when ``fresh`` or older than BUSY_FOR (PF90; called with the lock
        held). Within that second a socket bound since may go unseen, as one bound right after any
        reading does: the check only keeps pods off addresses that were busy before they came."""
        now = time.monotonic()
        if fresh or self._busy_read is None or now - self._busy_read[0] >= BUSY_FOR:
            self._busy_read = (now, {int(ipaddress.IPv4Address(a)) for a in self._busy() if "." in a})
        return self._busy_read[1]

    def _claimed(self, address: str) -> None:
        """Called with a pod's address whenever it is handed out (also again after a restart)."""

    def release(self, uid: str) -> None:
        """The pod is gone: its address may go to another pod once its directory is removed."""

    def _scan(self) -> dict[int, str]:
        taken: dict[int, str] = {}
        if self.pods_dir.is_dir():
            for pod_dir in self.pods_dir.iterdir():
                try:
                    taken[int(ipaddress.IPv4Address((pod_dir / IP_FILE).read_text().strip()))] = pod_dir.name
                except (OSError, ValueError):
                    continue
        return taken

    def _taken(self) -> dict[int, str]:
        """Address (as an int) -> pod uid. Read from the pods' files once, then kept by ``allocate`` and
        ``forget`` (PF62): reading every pod's file for every new pod was quadratic in a burst. An
        address whose pod went without ``forget`` only stays unused until the next full read, which
        comes before the range is called exhausted."""
        if self._known is None:
            self._known = self._scan()
        return self._known

    def forget(self, uid: str, address: str | None = None) -> None:
        """The pod's directory, and with it the record of its address (``address``, read before the
        record went), is gone."""
        with self._lock, self._machine_lock():
            gone = {address} if address else set()
            if self._known is not None:
                for number in [a for a, owner in self._known.items() if owner == uid]:
                    del self._known[number]
                    gone.add(str(ipaddress.IPv4Address(number)))
            for text in gone:
                self._unclaim(text, uid)

    def _unclaim(self, address: str, uid: str) -> None:
        if self.claims_dir is None or holds_address(self.pods_dir / uid, address):
            return  # the record is still there (its removal failed): the address stays taken
        claim = self.claims_dir / address
        with contextlib.suppress(OSError):
            if claim.read_text().strip() == self._pod_dir(uid):
                claim.unlink()

    def get(self, uid: str) -> str | None:
        try:
            return (self.pods_dir / uid / IP_FILE).read_text().strip()
        except OSError:
            return None

    def allocate(self, uid: str) -> str:
        with self._lock, self._machine_lock():
            existing = self.get(uid)
            if existing is not None and not _is_address(existing) and self.claims_dir is not None:
                existing = self._claimed_by(uid)
                log.warning("pod address record unreadable, the address its claim names is kept",
                            uid=uid, address=existing)
                if existing:
                    write_atomically(self.pods_dir / uid / IP_FILE, existing)
            if existing is not None and not _is_address(existing):
                existing = None  # no claims to ask: the pod gets a new address, as a new sandbox would
            if existing and not self._claimed_elsewhere(existing, uid):
                self._claim(existing, uid)
                self._claimed(existing)
                return existing
            if existing:
                # The claims were lost (the run directory is a tmpfs: a reboot) and another agent
                # took the address first: this pod gets a new one, as a new sandbox would.
                log.warning("pod_address_taken_elsewhere", uid=uid, address=existing)
                if self._known is not None:
                    self._known.pop(int(ipaddress.IPv4Address(existing)), None)
            for fresh in (False, True):
                if fresh:
                    self._known = None  # pods may have gone without forget(): read their files again
                taken = self._taken()
                busy = self._busy_numbers(fresh)
                for number in self._hosts():
                    # .0 and .255 are skipped: some programs refuse them as host addresses.
                    # An address something else on the host already listens on (another
                    # node agent on this machine, a leftover process) would make the
                    # pod's servers fail with EADDRINUSE: skip it.
                    if number in taken or number in busy or number & 0xFF in (0, 0xFF):
                        continue
                    text = str(ipaddress.IPv4Address(number))
                    if self._claimed_elsewhere(text, uid):
                        continue
                    path = self.pods_dir / uid / IP_FILE
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_atomically(path, text)
                    self._claim(text, uid)
                    taken[number] = uid
                    self._claimed(text)
                    return text
            raise RuntimeError(f"no free pod address left in {self.network}")

    def _hosts(self) -> range:
        """The range's host addresses as ints, in order: ``network.hosts()`` without an object each."""
        first, last = int(self.network.network_address), int(self.network.broadcast_address)
        if self.network.prefixlen >= 31:  # no network or broadcast address to leave out
            return range(first, last + 1)
        return range(first + 1, last)


class InterfaceAllocator(LoopbackAllocator):
    """Addresses from a routable range, each assigned (as a /32) to ``interface`` while its pod lives.

    The host answers ARP for every address assigned to it, so other hosts on the same network
    reach a pod at its address without routes per pod. Addresses already on the host (its own,
    another agent's pods) are never handed out.
    """

    def __init__(self, pods_dir: Path, network: str, interface: str) -> None:
        # No machine-wide claims: each host's range is its own share of the hosts' network, and hosts
        # in network namespaces may use the same addresses on their own links.
        super().__init__(pods_dir, network, claims_dir=None)
        if not netaddr.interface_exists(interface):
            raise ValueError(f"pod_interface: Invalid value: {interface!r}: no such network interface")
        self.interface = interface

    def _check_range(self, network: str) -> None:
        if self.network.version != 4 or self.network.is_loopback:
            raise ValueError(f"pod_cidr: Invalid value: {network!r}: a pod interface needs a routable IPv4 range")

    def _busy(self) -> set[str]:
        return addresses_in_use() | netaddr.addresses()

    def _claimed(self, address: str) -> None:
        netaddr.add_address(address, self.interface)
        log.info("pod_address_assigned", address=address, interface=self.interface)

    def release(self, uid: str) -> None:
        address = self.get(uid)
        if address:
            netaddr.delete_address(address, self.interface)
            log.info("pod_address_released", uid=uid, address=address, interface=self.interface)


def make_allocator(pods_dir: Path, network: str, interface: str | None = None,
                   claims_dir: Path | None = None) -> LoopbackAllocator:
    """``claims_dir`` applies to a loopback range, which every agent on the machine shares."""
    if interface:
        return InterfaceAllocator(pods_dir, network, interface)
    return LoopbackAllocator(pods_dir, network, claims_dir)


def addresses_in_use() -> set[str]:
    """IPv4 addresses with a bound TCP or UDP socket on this host (from /proc/net)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/udp"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    local = line.split()[1]
                    hex_ip = local.split(":")[0]
                    found.add(str(ipaddress.IPv4Address(bytes.fromhex(hex_ip)[::-1])))
        except OSError:
            continue
    return found
