"""The RuntimeDefault seccomp profile, as containerd builds it (an allow list; what is not
listed fails with EPERM), with the extra syscalls each granted capability needs."""
from __future__ import annotations

import platform
from typing import Any

# containerd's default allow list (contrib/seccomp), with the syscalls newer C libraries and
# runtimes use (rseq, close_range, pidfd_*, faccessat2, epoll_pwait2, membarrier...).
_ALLOWED = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32
geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday
getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init inotify_init1
inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents io_pgetevents_time64
ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule landlock_create_ruleset
landlock_restrict_self lchown lchown32 lgetxattr link linkat listen listxattr listxattrat
llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack
membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall
mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync
munlock munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2
pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64
pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename renameat renameat2
restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
sched_getaffinity sched_getattr sched_getparam sched_get_priority_max sched_get_priority_min
sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity
sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop
semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid
setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
sigprocmask sigreturn socket socketcall socketpair splice stat stat64 statfs statfs64 statx
symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate
truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat utimensat_time64
utimes vfork vmsplice wait4 waitid waitpid write writev
""".split()

# Only with the capability that makes them useful (containerd's per-capability additions).
_BY_CAPABILITY: dict[str, list[str]] = {
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
    "CAP_SYS_ADMIN": ["bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
                      "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
                      "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "umount", "umount2",
                      "unshare"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_CHROOT": ["chroot"],
    "CAP_SYS_MODULE": ["delete_module", "init_module", "finit_module"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_TTY_CONFIG": ["vhangup"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_BPF": ["bpf"],
    "CAP_PERFMON": ["perf_event_open"],
}

# containerd also lists SCMP_ARCH_X32. It is left out: every extra architecture makes runc compile the
# whole allow list once more (about 4.5 ms of each container start here), and x32 programs cannot run
# on most kernels anyway (Debian's refuse x32 system calls unless booted with syscall.x32=y; many
# are built without the ABI). An x32 system call is then a foreign architecture's, and the filter
# kills the process (SIGSYS) where the kernel would have answered ENOSYS. 32-bit x86 programs
# (int 0x80) still run (PF71).
_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}
_ARCH_SYSCALLS = {"x86_64": ["arch_prctl", "modify_ldt"], "aarch64": []}

# Namespace flags clone may not be given without CAP_SYS_ADMIN (linux/sched.h).
_CLONE_NAMESPACES = 0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x02000000
_EPERM, _ENOSYS = 1, 38


def runtime_default(capabilities: list[str], machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` of RuntimeDefault for a container with these bounding capabilities."""
    machine = machine or platform.machine()
    caps = set(capabilities)
    allowed = list(_ALLOWED) + _ARCH_SYSCALLS.get(machine, [])
    for cap, names in _BY_CAPABILITY.items():
        if cap in caps:
            allowed += [n for n in names if n not in allowed]
    rules: list[dict[str, Any]] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    for persona in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF):  # PER_LINUX, UNAME26, ADDR_NO_RANDOMIZE; query
        rules.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]})
    if "CAP_SYS_ADMIN" not in caps:
        # clone without namespace flags only; clone3 passes its flags in memory seccomp cannot
        # read, so it answers ENOSYS and the C library falls back to clone.
        rules.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": _CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]})
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS})
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": _EPERM,
            "architectures": _ARCHES.get(machine, []), "syscalls": rules}
