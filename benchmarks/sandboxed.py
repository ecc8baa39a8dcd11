"""Run a command with parts of a pod's sandbox and nothing else: the control sides of bench_overhead.py.

A pod's fio differs from fio on the host in many ways at once. This places a host process in only
the parts whose kernel cost is in question, so that a gap between the two can be split up:
``--cgroup-procs FILE`` joins a cgroup (its ``cgroup.procs``), ``--seccomp`` loads the RuntimeDefault
filter a pod gets (storage.agent.runtime.seccomp, for a container with the default capabilities)
through libseccomp, as runc does, for the same architectures. Then it becomes the command.

usage: python benchmarks/sandboxed.py [--cgroup-procs FILE] [--seccomp] -- COMMAND [ARG...]
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
from pathlib import Path
from typing import Any

# Appended: put first, the repository would shadow the benchmarks' own modules for a script importing this.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from storage.agent.runtime.oci import blkio_home, capabilities
from storage.agent.runtime.seccomp import runtime_default

# libseccomp's seccomp.h
_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def _action(rule: dict[str, Any], default_errno: int) -> int:
    if rule["action"] == "SCMP_ACT_ALLOW":
        return _ACT_ALLOW
    if rule["action"] == "SCMP_ACT_ERRNO":
        return _ACT_ERRNO | (rule.get("errnoRet", default_errno) & 0xFFFF)
    raise ValueError(f"action {rule['action']} is not used by RuntimeDefault")


def load_filter(profile: dict[str, Any]) -> None:
    """The OCI ``linux.seccomp`` profile, compiled and loaded into this process (and what it execs)."""
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    default_errno = int(profile.get("defaultErrnoRet", 1))
    ctx = lib.seccomp_init(_ACT_ERRNO | default_errno)
    if not ctx:
        raise OSError("seccomp_init failed")
    for arch in profile.get("architectures", []):
        token = lib.seccomp_arch_resolve_name(arch.removeprefix("SCMP_ARCH_").lower().encode())
        rc = lib.seccomp_arch_add(ctx, token)
        if rc not in (0, -17):  # -EEXIST: the native architecture is there already
            raise OSError(-rc, f"seccomp_arch_add {arch}")
    for rule in profile["syscalls"]:
        action = _action(rule, default_errno)
        args = rule.get("args") or []
        cmps = (_ArgCmp * max(len(args), 1))(*[_ArgCmp(a["index"], _OPS[a["op"]], a["value"], a.get("valueTwo", 0))
                                               for a in args])
        for name in rule["names"]:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:  # __NR_SCMP_ERROR: no such system call on this architecture (runc skips it too)
                continue
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(args), cmps)
            if rc != 0:
                raise OSError(-rc, f"seccomp_rule_add {name}")
    rc = lib.seccomp_load(ctx)
    if rc != 0:
        raise OSError(-rc, "seccomp_load")


class BlockIOGroup:
    """A cgroup of the block I/O controller made for this run (``--controls``), removed at the end."""

    ROOT = Path("/sys/fs/cgroup")

    def __init__(self) -> None:
        v1 = self.ROOT / "blkio"
        controllers = self.ROOT / "cgroup.controllers"
        if (v1 / "cgroup.procs").exists():
            parent = v1
        elif controllers.exists() and "io" in (self.ROOT / "cgroup.subtree_control").read_text().split():
            parent = self.ROOT  # v2: a child of the root gets the io controller only where the root enables it
        else:
            raise RuntimeError("no block I/O cgroup controller to place the control side in (v1 blkio, or v2 io "
                               "enabled in the root's cgroup.subtree_control)")
        self.path = parent / f"stowage-bench-overhead-{os.getpid()}"
        self.path.mkdir()
        # PF97: on cgroup v1 a pod's processes stay in the agent's blkio group, the host's here; on v2 a
        # pod has a group of its own for every controller.
        self.pods_share_host_group = blkio_home() is not None

    def wrap(self, argv: list[str], seccomp: bool) -> list[str]:
        """``argv`` run from inside the group, or (``seccomp``) under the pod's seccomp filter from the group a
        pod's I/O is issued from: the host's on cgroup v1 (PF97), this one on v2."""
        join = not (seccomp and self.pods_share_host_group)
        return [sys.executable, str(Path(__file__).resolve()),
                *(["--cgroup-procs", str(self.path / "cgroup.procs")] if join else []),
                *(["--seccomp"] if seccomp else []), "--", *argv]

    def close(self) -> None:
        # Every process placed in it has ended (each side's fio is waited for), so it is empty.
        self.path.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cgroup-procs", type=Path, help="a cgroup's cgroup.procs to join first")
    parser.add_argument("--seccomp", action="store_true", help="load a pod's RuntimeDefault filter")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    if args.cgroup_procs is not None:
        args.cgroup_procs.write_text(f"{os.getpid()}\n")
    if args.seccomp:
        load_filter(runtime_default(capabilities({})))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
