"""The mount table (``/proc/self/mountinfo``), mounts and unmounts (mount(2) where the agent chose the
options, the `mount` command where a helper or a device's refusal matters)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import structlog

from storage.system import safepath
from storage.system.executor import Executor, default_executor

log = structlog.get_logger(__name__)

MOUNTINFO = "/proc/self/mountinfo"

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    major_minor: str  # "7:3"
    root: str  # path inside the source filesystem ("/" unless a bind of a subdirectory)
    mount_point: str
    options: tuple[str, ...]  # per-mount options (ro/rw, nosuid, ...)
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _parse_line(line: str) -> MountEntry | None:
    left, _, right = line.partition(" - ")
    fields = left.split()
    tail = right.split()
    if len(fields) < 6 or len(tail) < 2:
        return None
    return MountEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        major_minor=fields[2],
        root=_unescape(fields[3]),
        mount_point=_unescape(fields[4]),
        options=tuple(fields[5].split(",")),
        fstype=tail[0],
        source=_unescape(tail[1]),
        super_options=tuple(tail[2].split(",")) if len(tail) > 2 else (),
    )


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        if line.strip():
            entry = _parse_line(line)
            if entry is not None:
                entries.append(entry)
    return entries


# The last table read and its parse: a node with hundreds of pods has thousands of mounts,
# and parsing dominates reading, while most reads find the table unchanged.
_last_parse: tuple[str, list[MountEntry]] = ("", [])
# Each line of the last table and its (immutable) entry: a table that changed by a few mounts since
# the last read -- the usual case while a burst of pods starts, each read by one pod's set-up -- is
# parsed only in its new lines, so reading it is O(lines) dict look-ups, not O(lines) parses (PF20).
# An entry is a pure function of its line, so reuse is exact; the cache is swapped whole (threads
# racing only parse a line twice).
_line_entries: dict[str, MountEntry] = {}


def _parse_incremental(text: str) -> list[MountEntry]:
    global _line_entries
    known = _line_entries
    fresh: dict[str, MountEntry] = {}
    entries = []
    for line in text.splitlines():
        entry = known.get(line)
        if entry is None:
            if not line.strip():
                continue
            entry = _parse_line(line)
            if entry is None:
                continue
        fresh[line] = entry
        entries.append(entry)
    _line_entries = fresh
    return entries


def read_mountinfo(path: str = MOUNTINFO) -> list[MountEntry]:
    global _last_parse
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    cached_text, cached = _last_parse
    if text == cached_text and cached:
        return list(cached)
    entries = _parse_incremental(text) if path == MOUNTINFO else parse_mountinfo(text)
    _last_parse = (text, entries)
    return list(entries)


SCANS_BEFORE_INDEX = 2


class MountTable:
    """One reading of the mount table, indexed by mount point.

    Pass one around to answer many questions about the same moment without
    re-reading a table whose size grows with the number of pods. It does not
    see mounts made after it was read."""

    def __init__(self, entries: list[MountEntry]) -> None:
        self.entries = entries
        # Built at the third question (PF63, PF81): most tables are read to answer one or two (is this
        # a mount point? and what is on the device's global mount?), for which a scan each costs a
        # fraction of indexing thousands of mounts.
        self._by_point: dict[str, list[MountEntry]] | None = None
        self._asked = 0

    @classmethod
    def read(cls) -> "MountTable":
        return cls(read_mountinfo())

    def _stacked(self, path: str | os.PathLike[str]) -> list[MountEntry]:
        point = _real(path)
        if self._by_point is None:
            if self._asked < SCANS_BEFORE_INDEX:
                self._asked += 1
                return [e for e in self.entries if e.mount_point == point]
            by_point: dict[str, list[MountEntry]] = {}
            for entry in self.entries:
                by_point.setdefault(entry.mount_point, []).append(entry)
            self._by_point = by_point
        return list(self._by_point.get(point, ()))

    def at(self, path: str | os.PathLike[str]) -> list[MountEntry]:
        """Every mount stacked on ``path``, bottom first."""
        return self._stacked(path)

    def is_mount_point(self, path: str | os.PathLike[str]) -> bool:
        return bool(self._stacked(path))

    def top(self, path: str | os.PathLike[str]) -> MountEntry | None:
        stacked = self._stacked(path)
        return stacked[-1] if stacked else None

    def under(self, prefix: str | os.PathLike[str]) -> list[MountEntry]:
        """Mounts at or below ``prefix``, deepest and newest first (the order to unmount them in)."""
        return _under(self.entries, prefix)

    def under_each(self, prefixes: Sequence[str | os.PathLike[str]]) -> list[list[MountEntry]]:
        """``under`` of each prefix, in one pass over the table instead of one per prefix (PF69); a mount
        below two of them is listed under the first."""
        return _under_each(self.entries, prefixes)


def _real(path: str | os.PathLike[str]) -> str:
    return os.path.realpath(os.fspath(path))


def real_without_stat(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute and canonical with only its parent resolved: ``path`` itself is never
    stat'ed, because a stat of a mount point whose FUSE daemon hangs blocks."""
    absolute = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def mounts_at(path: str | os.PathLike[str]) -> list[MountEntry]:
    """Every mount stacked on ``path``, bottom first."""
    return MountTable.read().at(path)


def is_mount_point(path: str | os.PathLike[str]) -> bool:
    return bool(mounts_at(path))


def own_filesystem_mounted(path: str | os.PathLike[str]) -> bool:
    """Whether a filesystem of its own (a tmpfs, say) is mounted on ``path``, a directory the agent made
    (PF67): a stat of it and of its parent instead of a reading of the mount table, which on a node with
    hundreds of pods has thousands of lines. Only for paths no FUSE daemon serves (a stat of a hung one
    blocks); a bind mount from the parent's own filesystem is not seen."""
    return os.path.ismount(path)


def top_mount(path: str | os.PathLike[str]) -> MountEntry | None:
    stacked = mounts_at(path)
    return stacked[-1] if stacked else None


def mounts_under(prefix: str | os.PathLike[str]) -> list[MountEntry]:
    """Mounts at or below ``prefix`` (compared by path component), deepest and newest first,
    which is the order to unmount them in."""
    return _under(read_mountinfo(), prefix)


def _under(entries: list[MountEntry], prefix: str | os.PathLike[str]) -> list[MountEntry]:
    return _under_each(entries, [prefix])[0]


def _under_each(entries: list[MountEntry], prefixes: Sequence[str | os.PathLike[str]]) -> list[list[MountEntry]]:
    bases = [_real(p).rstrip("/") for p in prefixes]  # "" for the root, under which everything is
    below = [base + "/" for base in bases]
    # Most of the table is other pods' mounts: one comparison with what all the prefixes share skips them.
    common = os.path.commonprefix(bases)
    found: list[list[MountEntry]] = [[] for _ in bases]
    for entry in entries:
        point = entry.mount_point
        if not point.startswith(common):
            continue
        for i, base in enumerate(bases):
            if point == base or point.startswith(below[i]) or not base:
                found[i].append(entry)
                break
    for listed in found:  # deepest and newest first: the order to unmount them in
        listed.sort(key=lambda e: (e.mount_point.count("/"), e.mount_id), reverse=True)
    return found


# mount(2) flags (linux/mount.h), and the options mount(8) turns into them.
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SYNCHRONOUS, MS_REMOUNT = 1, 2, 4, 8, 16, 32
MS_DIRSYNC, MS_NOATIME, MS_NODIRATIME, MS_BIND = 128, 1024, 2048, 4096
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
_OPTION_FLAGS = {"rw": 0, "ro": MS_RDONLY, "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                 "sync": MS_SYNCHRONOUS, "dirsync": MS_DIRSYNC, "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                 "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
# A tmpfs's own options, which the kernel parses (Documentation/filesystems/tmpfs.rst); any other
# option (a user's, or one of mount(8)'s own such as nofail) keeps the command.
_TMPFS_DATA = ("size=", "mode=", "uid=", "gid=", "nr_inodes=", "nr_blocks=", "huge=", "mpol=")
# Filesystems the kernel mounts from a block device by itself: no mount helper (/sbin/mount.<type>) exists
# for them, so mount(8) only turns the options into flags (PF74).
_DEVICE_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})
# The per-mount flags a read-only remount of a bind keeps, as mount(8) does (statvfs -> mount(2)).
_KEPT_ON_REMOUNT = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
                    os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME, os.ST_RELATIME: MS_RELATIME}


def _tmpfs_call(options: Sequence[str]) -> tuple[int, str] | None:
    """(flags, data) of a tmpfs mount made with mount(2) directly; None when an option needs mount(8)."""
    flags, data = 0, []
    for option in options:
        if option in _OPTION_FLAGS:
            flags |= _OPTION_FLAGS[option]
        elif option.startswith(_TMPFS_DATA) and "," not in option:
            data.append(option)
        else:
            return None
    return flags, ",".join(data)


def _device_call(source: str, fstype: str | None, options: Sequence[str]) -> int | None:
    """The flags of a block device's mount made with mount(2) directly; None when mount(8) is needed (a
    filesystem of its own options, a helper, a file to set up a loop device for, a type to probe)."""
    if fstype not in _DEVICE_FILESYSTEMS or not source.startswith("/dev/"):
        return None
    flags = 0
    for option in options:
        if option not in _OPTION_FLAGS:
            return None
        flags |= _OPTION_FLAGS[option]
    return flags


def _vfs_flags(target: str) -> int:
    try:
        return os.statvfs(target).f_flag
    except OSError:  # nothing there to read (a recording executor mounted nothing): no flag to keep
        return 0


def mount(
    source: str,
    target: str | os.PathLike[str],
    fstype: str | None = None,
    options: Sequence[str] = (),
    *,
    executor: Executor | None = None,
) -> None:
    argv = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    argv += [source, os.fspath(target)]
    log.info("mount", source=source, target=os.fspath(target), fstype=fstype, options=list(options))
    ex = executor or default_executor()
    call = _tmpfs_call(options) if fstype == "tmpfs" else None
    device_flags = _device_call(source, fstype, options) if call is None else None
    if call is not None:
        # PF68: a tmpfs (secret, projected and Memory emptyDir volumes) needs no helper and no probe.
        ex.mount(source, os.fspath(target), fstype, call[0], call[1] or None, argv)
    elif device_flags is not None:
        # PF74: ext4, xfs or btrfs on a device, with flag options only. A refusal (a blank device, another
        # filesystem) runs mount(8) after it, for its words: the safe-format path and FailedMount quote them.
        ex.mount(source, os.fspath(target), fstype, device_flags, None, argv, explain=True)
    else:
        # A network filesystem, a helper (mount.nfs, mount.fuse), filesystem options or a type to probe:
        # mount(8).
        ex.run(argv)


def bind_mount(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    read_only: bool = False,
    *,
    executor: Executor | None = None,
) -> None:
    ex = executor or default_executor()
    target = os.fspath(target)
    ex.mount(os.fspath(source), target, None, MS_BIND, None, ["mount", "--bind", os.fspath(source), target])
    if read_only:
        # The kernel ignores "ro" on the initial bind: it must be a remount of the bind, which keeps
        # the flags the bind inherited (mount(8) reads them back the same way).
        try:
            kept = _vfs_flags(target)
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            flags |= sum(flag for st, flag in _KEPT_ON_REMOUNT.items() if kept & st)
            ex.mount("none", target, None, flags, None, ["mount", "-o", "remount,bind,ro", target])
        except Exception:
            try:
                ex.umount(target, False, ["umount", target])
            except Exception as exc:  # the first failure is the one to report
                log.warning("umount.failed", target=target, error=str(exc))
            raise
    log.info("mount.bind", source=os.fspath(source), target=target, read_only=read_only)


def _has_umount_helper(fstype: str | None) -> bool:
    return bool(fstype) and any(os.path.exists(f"{d}/umount.{fstype}") for d in ("/sbin", "/usr/sbin"))


def unmount(path: str | os.PathLike[str], lazy: bool = False, *, executor: Executor | None = None,
            fstype: str | None = None) -> None:
    """``fstype``, when the caller knows it: a type with an unmount helper (umount.nfs tells the server)
    keeps umount(8); anything else is umount2(2) in this process (PF68)."""
    argv = ["umount"]
    if lazy:
        argv.append("-l")
    argv.append(os.fspath(path))
    log.info("umount", target=os.fspath(path), lazy=lazy)
    ex = executor or default_executor()
    if _has_umount_helper(fstype):
        ex.run(argv)
    else:
        ex.umount(os.fspath(path), lazy, argv)


def process_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat from the third on (state first), or None when there is no such process.
    The command name (field 2) may hold spaces and parentheses: the fields after it follow its last ")"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(errors="surrogateescape")
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def process_stopped(pid: int) -> bool:
    """True when ``pid`` is stopped (SIGSTOP, a debugger): a FUSE daemon in that state answers nothing."""
    fields = process_stat(pid)
    return fields is not None and fields[0] in ("T", "t")


def _process_alive(pid: int) -> bool:
    fields = process_stat(pid)
    return fields is not None and fields[0] != "Z"


def wait_processes_gone(pids: Sequence[int], timeout: float) -> bool:
    """Wait (with back-off) until none of ``pids`` is alive; False when one still is after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    delay = 0.01
    while any(_process_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(0.2, delay * 2)
    return True


def kill_processes(pids: Sequence[int], timeout: float = 5.0) -> bool:
    """SIGKILL ``pids`` and wait for them to go; a FUSE daemon's death ends its connection, which is what
    unblocks an unmount waiting on it."""
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    gone = wait_processes_gone(pids, timeout)
    if not gone:
        log.warning("fuse.daemon_survived_kill", pids=list(pids))
    return gone


def unmount_fuse(path: str | os.PathLike[str], timeout: float = 5.0, *, executor: Executor | None = None,
                 daemons: Callable[[], list[int]] | None = None, exit_timeout: float = 5.0) -> bool:
    """Unmount a FUSE mount without ever blocking on its daemon: found in the table without a stat of
    the mount point, then ``umount``, after ``timeout`` ``umount -f`` (aborts the FUSE connection), then
    ``umount -l`` (Kubernetes' forced unmount after a timeout). ``daemons`` lists the processes serving the
    mount (ceph-fuse, rbd-fuse): a stopped one is killed before anything waits on it, they are killed when
    the plain unmount fails, and one still running ``exit_timeout`` after the unmount is killed. True when
    something was unmounted; RuntimeError when the mount is still there after all three."""
    from storage.system.executor import CommandError, CommandTimeout

    point = real_without_stat(path)

    def mounted() -> bool:
        return any(e.mount_point == point for e in read_mountinfo())

    def reap() -> None:
        pids = daemons() if daemons else []
        if pids and not wait_processes_gone(pids, exit_timeout):
            kill_processes(pids)

    if not mounted():
        reap()
        return False
    if daemons:
        stuck = [p for p in daemons() if process_stopped(p)]
        if stuck:
            log.warning("umount.fuse_daemon_stopped", target=point, pids=stuck)
            kill_processes(stuck)
    ex = executor or default_executor()
    for argv in (["umount", point], ["umount", "-f", point], ["umount", "-l", point]):
        try:
            ex.run(argv, timeout=timeout)
        except CommandTimeout:
            log.warning("umount.fuse_hung", target=point, argv=argv[:-1])
        except CommandError as exc:
            log.warning("umount.fuse_failed", target=point, argv=argv[:-1], error=str(exc))
        if not mounted():
            log.info("umount.fuse", target=point, how=" ".join(argv[:-1]))
            reap()
            return True
        if daemons and argv[1] == point:  # the plain unmount did not finish: the daemon does not answer
            kill_processes(daemons())
    raise RuntimeError(f"FUSE mount {point} would not unmount")


def isolate_tree(entries: Sequence[MountEntry]) -> None:
    """Make private each of ``entries`` that is the parent of another of them (SEMANTICS SV13).

    An unmount propagates to the peers of the unmounted mount's parent. When that parent is a
    recursive copy still in the peer group of its original (a Bidirectional hostPath staged by an
    agent that died before unstaging it, or a pod's bind of a shared node-wide mount), unmounting
    the copy's submounts would unmount the original's at the same places: the host's, or another
    pod's. A parent about to be removed with its children has nobody to tell, so it goes private
    first. The unmount of a top mount of the tree follows its parent outside the tree, whose
    propagation is unchanged: the copies that receive from that parent still lose it. A mount gone
    meanwhile needs nothing."""
    ids = {e.mount_id for e in entries}
    parents = {e.parent_id for e in entries if e.parent_id in ids and e.parent_id != e.mount_id}
    for entry in entries:
        if entry.mount_id not in parents:
            continue
        try:
            safepath.set_propagation(entry.mount_point, safepath.MS_PRIVATE)
        except OSError as exc:
            log.info("mount.isolate_skipped", target=entry.mount_point, error=str(exc))


def unmount_entries(entries: Sequence[MountEntry], *, executor: Executor | None = None) -> bool:
    """Unmount the given mounts in order (as ``MountTable.under`` returns them), without
    re-reading the table between them. False when one would not go: the caller then falls
    back to ``unmount_all_under``, which re-reads after each unmount."""
    isolate_tree(entries)
    for entry in entries:
        try:
            unmount(entry.mount_point, executor=executor, fstype=entry.fstype)
        except Exception as exc:  # gone meanwhile, or busy: the re-reading fallback decides
            log.info("umount.retry_by_table", target=entry.mount_point, error=str(exc))
            return False
    return True


def unmount_all_under(prefix: str | os.PathLike[str], *, executor: Executor | None = None) -> None:
    """Unmount everything at or under ``prefix``, deepest first, stacked mounts included."""
    # Re-read after each unmount: stacked mounts and propagation change the table.
    for attempt in range(1000):
        found = mounts_under(prefix)
        if not found:
            return
        if attempt == 0:
            isolate_tree(found)
        unmount(found[0].mount_point, executor=executor, fstype=found[0].fstype)
    raise RuntimeError(f"mounts under {prefix} keep reappearing")


def device_number(path: str | os.PathLike[str]) -> str:
    """``major:minor`` of a block device node (as mountinfo shows it)."""
    st = os.stat(path)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def mounts_of_device(device: str | os.PathLike[str]) -> list[MountEntry]:
    """Mounts of a block device's filesystem (binds of it included).

    btrfs reports an anonymous device number in mountinfo, so the source
    path is compared as well."""
    number = device_number(device)
    dev = _real(device)
    entries = read_mountinfo()
    by_source = {e.major_minor for e in entries if e.source == dev}
    return [e for e in entries if e.major_minor == number or e.major_minor in by_source]


def is_path_under(path: str | os.PathLike[str], prefix: str | os.PathLike[str]) -> bool:
    p = Path(_real(path))
    base = Path(_real(prefix))
    return p == base or base in p.parents
