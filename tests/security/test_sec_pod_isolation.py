"""Issue 8, pod isolation: each attack a pod could make on the host, tried with real runc pods.

Every pod runs in a user namespace of its own (root inside is an unprivileged host id), under
containerd's RuntimeDefault seccomp profile, with the default capabilities, and its root never
shows the agent's data dir, pools or the container roots of other pods, even with CAP_SYS_ADMIN.
"""
from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from sec_harness import (ATTACK, DEFAULT_CAPS, SecHarness, cap_mask, container_state, make_pod, need_runc,
                         probe_script, result)
from storage.agent.runtime.oci import RUN_AS_ROOT, RUN_AS_USER_ROOT

pytestmark = pytest.mark.root

SECRET = "s3cret-admin-token,admin,admin"
SLEEP = ["sleep", "1000"]


@pytest.fixture(params=["/var/tmp", "/root", "/tmp"])
def harness(request: pytest.FixtureRequest) -> Iterator[SecHarness]:
    """A runtime whose data dir is on the host's own disk (/var/tmp), under a private home
    (/root, mode 0700) or under /tmp (which pods see as their own tmpfs)."""
    need_runc()
    h = SecHarness(request.param)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture
def disk_harness() -> Iterator[SecHarness]:
    need_runc()
    h = SecHarness("/var/tmp")
    try:
        yield h
    finally:
        h.cleanup()


def status_fields(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def userns_base(pid: int) -> int:
    first = Path(f"/proc/{pid}/uid_map").read_text().split()
    assert first[0] == "0", first
    return int(first[1])


# ---- (d) the defaults -----------------------------------------------------------------------

def test_sec_default_pod_user_namespace_seccomp_and_default_caps(disk_harness):
    h = disk_harness
    vol = h.volume("v")
    uid = h.run(make_pod("defaults", [{"name": "c", "command": SLEEP,
                                       "volumeMounts": [{"name": "v", "mountPath": "/vol"}]}]), {"v": str(vol)})
    pid = h.wait_running(uid)
    status = status_fields(pid)
    assert status["Seccomp"] == "2", "RuntimeDefault seccomp filter must be on"
    assert int(status["CapEff"], 16) == cap_mask(DEFAULT_CAPS), status["CapEff"]
    assert int(status["CapBnd"], 16) == cap_mask(DEFAULT_CAPS), status["CapBnd"]
    base = userns_base(pid)
    assert base >= 65536, "container root must map to an unprivileged host id"
    assert status["Uid"].split()[0] == str(base), "the pod's root runs as the range's base on the host"
    assert Path(f"/proc/{pid}/ns/user").resolve() != Path("/proc/self/ns/user").resolve()
    mountinfo = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    vol_line = next(line for line in mountinfo if line.split()[4] == "/vol")
    assert "idmapped" in vol_line.split()[5], vol_line


def test_sec_two_pods_get_distinct_ranges_and_a_range_is_reused_once_its_pod_is_gone(disk_harness):
    h = disk_harness
    a = h.run(make_pod("a", [{"name": "c", "command": SLEEP}]))
    b = h.run(make_pod("b", [{"name": "c", "command": SLEEP}]))
    base_a, base_b = userns_base(h.wait_running(a)), userns_base(h.wait_running(b))
    assert abs(base_a - base_b) >= 65536, "ranges must not overlap"
    h.rt.kill_pod(a, 0)
    h.rt.remove_pod(a)
    # The claims directory is the machine's: a pod of another agent (a parallel test) may take the freed
    # range at once, so the check is that a's claim is gone, not that the range stays unclaimed.
    try:
        owner = (h.rt.userns.claims_dir / str(base_a)).read_text().strip()
    except FileNotFoundError:
        owner = ""
    assert owner != str((h.rt.pods_dir / a).resolve()), "a removed pod's range is free again"
    c = h.run(make_pod("c", [{"name": "c", "command": SLEEP}]))
    base_c = userns_base(h.wait_running(c))
    # PF5: the search goes on past the range handed out last, so c gets a range of its own beside b's;
    # a's freed range comes round again once the search wraps (tests/unit/agent/test_userns_allocator.py).
    assert abs(base_c - base_b) >= 65536, "ranges of running pods must not overlap"


def test_sec_root_in_the_pod_writes_its_volume_with_the_right_owners(disk_harness):
    """Idmapped volume binds: root in the pod owns what root owns on disk, and a non-root user's
    files carry its own id on disk, so data is not tied to the pod's host range."""
    h = disk_harness
    vol = h.volume("data")
    os.chmod(vol, 0o755)
    (vol / "from-host").write_text("x")
    script = "touch /data/by-root && stat -c %u /data/from-host && mkdir /data/u && chown 1000:1000 /data/u"
    uid = h.run(make_pod("owners", [{"name": "c", "command": ["sh", "-c", script],
                                     "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]), {"data": str(vol)})
    term = h.wait_exit(uid)
    assert term["exitCode"] == 0, h.logs(uid)
    assert h.logs(uid).strip() == "0", "a host file owned by root shows as owned by the pod's root"
    assert os.stat(vol / "by-root").st_uid == 0
    assert os.stat(vol / "u").st_uid == 1000
    user = h.run(make_pod("user", [{"name": "c", "command": ["sh", "-c", "touch /data/u/mine; id -u"],
                                    "securityContext": {"runAsUser": 1000},
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]), {"data": str(vol)})
    assert h.wait_exit(user)["exitCode"] == 0, h.logs(user)
    assert os.stat(vol / "u" / "mine").st_uid == 1000


def test_sec_seccomp_denies_namespace_and_keyring_syscalls(disk_harness):
    h = disk_harness
    script = ("unshare --user true && echo unshare-allowed; "
              "python3 -c 'import ctypes; print(\"keyctl\", ctypes.CDLL(None, use_errno=True).syscall(250, 0, 0) == -1 "
              "and ctypes.get_errno())'")
    uid = h.run(make_pod("seccomp", [{"name": "c", "command": ["sh", "-c", script]}]))
    h.wait_exit(uid)
    logs = h.logs(uid)
    assert "unshare-allowed" not in logs, logs
    assert "keyctl 1" in logs, f"keyctl must fail with EPERM: {logs}"


# mov eax, 20 (getpid in the i386 table); int 0x80; ret -- run from an executable page.
_I386_GETPID = ("import ctypes, mmap; b = mmap.mmap(-1, 4096, prot=7); b.write(bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])); "
                "print('i386 getpid', ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(b)))(), flush=True)")
# getpid with the x32 ABI's bit (0x40000000) set.
_X32_GETPID = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); print('x32 asked', flush=True); "
               "print('x32 getpid', libc.syscall(0x40000000 + 39), ctypes.get_errno(), flush=True)")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the i386 and x32 ABIs exist on x86-64 only")
def test_sec_runtime_default_runs_32_bit_x86_calls_and_kills_x32_ones(disk_harness):
    """PF71: the filter covers the native and the i386 architectures; an x32 call is a foreign one."""
    h = disk_harness
    i386 = h.run(make_pod("i386", [{"name": "c", "command": ["python3", "-c", _I386_GETPID]}]))
    assert h.wait_exit(i386)["exitCode"] == 0, h.logs(i386)
    assert "i386 getpid 1" in h.logs(i386), "the pod's first process is pid 1 in its pid namespace"
    x32 = h.run(make_pod("x32", [{"name": "c", "command": ["python3", "-c", _X32_GETPID]}]))
    exit_code = h.wait_exit(x32)["exitCode"]
    logs = h.logs(x32)
    assert "x32 asked" in logs and "x32 getpid" not in logs, logs
    assert exit_code == 128 + signal.SIGSYS, f"killed by SIGSYS, not answered: exit {exit_code}, {logs}"
    unconfined = h.run(make_pod("x32-unconfined", [{"name": "c", "command": ["python3", "-c", _X32_GETPID],
                                                    "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]))
    assert h.wait_exit(unconfined)["exitCode"] == 0, h.logs(unconfined)
    assert "x32 getpid" in h.logs(unconfined), "without a filter the kernel answers (ENOSYS without the x32 ABI)"


def test_sec_unconfined_localhost_and_privileged_seccomp(disk_harness):
    h = disk_harness
    unconfined = h.run(make_pod("unconfined", [{"name": "c", "command": SLEEP, "securityContext": {
        "seccompProfile": {"type": "Unconfined"}}}]))
    assert status_fields(h.wait_running(unconfined))["Seccomp"] == "0"
    local = h.run(make_pod("local", [{"name": "c", "command": SLEEP, "securityContext": {
        "seccompProfile": {"type": "Localhost", "localhostProfile": "x.json"}}}]))
    status = h.wait(local, lambda s: container_state(s).get("waiting", {}).get("reason") == "CreateContainerConfigError",
                    "Localhost to be refused")
    assert "Localhost" in container_state(status)["waiting"]["message"]
    dropped = h.run(make_pod("dropped", [{"name": "c", "command": SLEEP, "securityContext": {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}]))
    fields = status_fields(h.wait_running(dropped))
    assert int(fields["CapEff"], 16) == cap_mask(["NET_BIND_SERVICE"])
    assert fields["NoNewPrivs"] == "1"


# ---- (a) the "shocker" escape ---------------------------------------------------------------

def test_sec_shocker_open_by_handle_at_cannot_open_the_hosts_root(disk_harness):
    h = disk_harness
    vol = h.volume("shock")
    if subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(vol)], capture_output=True,
                      text=True).stdout.strip() != "ext4":
        pytest.skip("the handle the attack forges (inode 2, generation 0) is ext4's root")
    # The attack itself works: run on the host, the same code opens the host's root.
    host = subprocess.run([sys.executable, "-c", ATTACK, '{"shocker": "%s"}' % vol], capture_output=True, text=True)
    opened = result(host.stdout)["shocker"]
    assert isinstance(opened, list) and "etc" in opened, opened
    uid = h.run(make_pod("shocker", [{"name": "c", "command": probe_script({"shocker": "/vol"}),
                                      "securityContext": {"capabilities": {"add": ["DAC_READ_SEARCH"]}},
                                      "volumeMounts": [{"name": "v", "mountPath": "/vol"}]}]), {"v": str(vol)})
    h.wait_exit(uid)
    outcome = result(h.logs(uid))["shocker"]
    assert outcome == "error 1", f"open_by_handle_at must fail with EPERM in the pod, got {outcome}"


# ---- (b), (c) the data dir, tokens, pools and other pods' volumes --------------------------

def _plant(h: SecHarness) -> tuple[Path, Path, Path]:
    tokens = h.data_dir / "tokens.csv"
    tokens.write_text(SECRET)
    other = h.volume("other-pods-volume") / "secret.txt"
    other.write_text(SECRET)
    return tokens, other, h.data_dir


@pytest.mark.parametrize("caps", [[], ["SYS_ADMIN"]], ids=["default", "sys-admin"])
def test_sec_pod_cannot_see_or_unmask_the_data_dir(harness, caps):
    h = harness
    tokens, other, data = _plant(h)
    checks = {"umount": ["/tmp", str(data), str(data / "pods"), "/vol"],
              "list": [str(data)], "read": [str(tokens), str(other)]}
    vol = h.volume("own")
    uid = h.run(make_pod("attacker", [{"name": "c", "command": probe_script(checks),
                                       "securityContext": {"capabilities": {"add": caps}},
                                       "volumeMounts": [{"name": "v", "mountPath": "/vol"}]}]), {"v": str(vol)})
    h.wait_exit(uid)
    logs = h.logs(uid)
    found = result(logs)
    assert SECRET not in logs, f"a pod read a secret from the data dir: {found}"
    assert found[f"read {tokens}"].startswith("error"), found
    assert found[f"read {other}"].startswith("error"), found
    listing = found[f"list {data}"]
    assert listing == [] or str(listing).startswith("error"), f"the data dir must look empty or absent: {listing}"
    if not caps:
        assert all(code != 0 for code in found[f"umount {data}"]), "without SYS_ADMIN nothing unmounts"


def test_sec_the_probe_does_reveal_the_data_dir_to_a_fully_trusted_pod(disk_harness):
    """The control: a privileged pod with the host's users (what Pod Security Admission keeps out
    of ordinary namespaces) does unmask the data dir, so the probe above is able to find it."""
    h = disk_harness
    tokens, _, data = _plant(h)
    checks = {"umount": [str(data)], "read": [str(tokens)]}
    uid = h.run(make_pod("trusted", [{"name": "c", "command": probe_script(checks),
                                      "securityContext": {"privileged": True}}], hostUsers=True))
    h.wait_exit(uid)
    assert result(h.logs(uid))[f"read {tokens}"] == SECRET


def test_sec_pool_paths_are_hidden_too(disk_harness):
    h = disk_harness
    pool = h.base / "pool"
    pool.mkdir()
    (pool / "pvc-1.img").write_text(SECRET)
    h.rt.settings.hidden = (str(pool),)
    checks = {"umount": [str(pool)], "list": [str(pool)], "read": [str(pool / "pvc-1.img")]}
    uid = h.run(make_pod("pool", [{"name": "c", "command": probe_script(checks),
                                   "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]))
    h.wait_exit(uid)
    found = result(h.logs(uid))
    assert found[f"list {pool}"] == [], found
    assert found[f"read {pool / 'pvc-1.img'}"].startswith("error"), found


# ---- (e) runAsNonRoot, runAsUser, runAsGroup, supplementalGroups ---------------------------

def test_sec_run_as_non_root_refuses_root(disk_harness):
    h = disk_harness
    for name, security, message in (("implicit", {"runAsNonRoot": True}, RUN_AS_ROOT),
                                     ("explicit", {"runAsNonRoot": True, "runAsUser": 0}, RUN_AS_USER_ROOT)):
        uid = h.run(make_pod(name, [{"name": "c", "command": SLEEP, "securityContext": security}]))
        status = h.wait(uid, lambda s: "waiting" in container_state(s) and
                        container_state(s)["waiting"]["reason"] == "CreateContainerConfigError", f"{name} refused")
        assert container_state(status)["waiting"]["message"] == message
        assert h.rt.settings.runc.state(f"stowage-{uid}-c") is None, "nothing may run"
    assert RUN_AS_ROOT == "container has runAsNonRoot and image will run as root"


def test_sec_run_as_user_group_and_supplemental_groups(disk_harness):
    h = disk_harness
    uid = h.run(make_pod("ids", [{"name": "c", "command": SLEEP,
                                  "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 2000}}],
                         securityContext={"supplementalGroups": [3000], "fsGroup": 4000}))
    pid = h.wait_running(uid)
    fields = status_fields(pid)
    base = userns_base(pid)
    assert fields["Uid"].split()[0] == str(base + 1000)
    assert fields["Gid"].split()[0] == str(base + 2000)
    assert {str(base + 3000), str(base + 4000)} <= set(fields["Groups"].split())
    assert int(fields["CapEff"], 16) == 0, "a non-root user has no effective capabilities"


# ---- (f) host namespaces ----------------------------------------------------------------------

def _same_ns(pid: int, kind: str) -> bool:
    return os.readlink(f"/proc/{pid}/ns/{kind}") == os.readlink(f"/proc/self/ns/{kind}")


def test_sec_host_namespaces_are_honoured(disk_harness):
    h = disk_harness
    default = h.wait_running(h.run(make_pod("own", [{"name": "c", "command": SLEEP}])))
    assert not any(_same_ns(default, k) for k in ("pid", "ipc", "uts", "user", "mnt"))
    shared = h.wait_running(h.run(make_pod("host", [{"name": "c", "command": SLEEP}],
                                           hostPID=True, hostIPC=True, hostNetwork=True)))
    assert all(_same_ns(shared, k) for k in ("pid", "ipc", "uts", "net"))
    assert _same_ns(shared, "user"), "a pod sharing host namespaces runs with the host's users"
    refused = h.run(make_pod("contradiction", [{"name": "c", "command": SLEEP}], hostPID=True, hostUsers=False))
    status = h.wait(refused, lambda s: container_state(s).get("waiting", {}).get("reason") == "CreateContainerConfigError",
                    "hostUsers: false with hostPID to be refused")
    assert "hostUsers" in container_state(status)["waiting"]["message"]


def test_sec_host_users_true_runs_without_a_user_namespace(disk_harness):
    h = disk_harness
    pid = h.wait_running(h.run(make_pod("hostusers", [{"name": "c", "command": SLEEP}], hostUsers=True)))
    assert _same_ns(pid, "user")
    assert status_fields(pid)["Seccomp"] == "2", "the seccomp default does not depend on the user namespace"


# ---- (d2) /sys: the host's sysfs, read-only all the way down --------------------------------

SYS_PROBE = r'''
import errno, json, os
out = {}
def attempt(key, fn):
    try:
        fn()
        out[key] = "ok"
    except OSError as exc:
        out[key] = errno.errorcode.get(exc.errno, str(exc.errno))
def write(path, text):
    with open(path, "w") as f:
        f.write(text)
memory = next(l.split(":", 2)[2] for l in open("/proc/self/cgroup").read().splitlines() if l.split(":")[1] == "memory")
limit = "/sys/fs/cgroup/memory" + memory.rstrip("/") + "/memory.limit_in_bytes"
attempt("read own limit", lambda: open(limit).read())
attempt("raise own limit", lambda: write(limit, str(1 << 30)))
attempt("leave the cgroup", lambda: write("/sys/fs/cgroup/pids/cgroup.procs", str(os.getpid())))
attempt("tracing instance", lambda: os.mkdir("/sys/kernel/tracing/instances/" + os.environ["PROBE_NAME"]))
out["tracing entries"] = sorted(os.listdir("/sys/kernel/tracing")) if os.path.isdir("/sys/kernel/tracing") else []
out["debug entries"] = sorted(os.listdir("/sys/kernel/debug")) if os.path.isdir("/sys/kernel/debug") else []
attempt("sysfs top", lambda: write("/sys/kernel/mm/ksm/run", "1"))
print("RESULT " + json.dumps(out))
'''


def test_sec_host_users_pod_cannot_write_any_mount_under_sys(disk_harness):
    """A `hostUsers: true` pod (Pod Security baseline allows it) is real root with the default
    capabilities. /sys is the host's, bound because the pod shares the host network: every mount
    under it (the cgroup hierarchies, tracefs) must be read-only too, not only the top, or the pod
    raises its own memory limit, leaves its cgroup, freezes other pods or traces the host's execs.
    Kubernetes' containers see a fresh, read-only sysfs with no tracefs or debugfs in it."""
    if not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():
        pytest.skip("needs the cgroup v1 memory hierarchy mounted under /sys/fs/cgroup/memory (this probe reads it)")
    h = disk_harness
    probe = f"stowage-probe-{os.getpid()}"
    instance = Path("/sys/kernel/tracing/instances") / probe  # made on the host only if the attack works
    try:
        uid = h.run(make_pod("sysprobe", [{"name": "c", "command": ["python3", "-c", SYS_PROBE],
                                           "env": [{"name": "PROBE_NAME", "value": probe}],
                                           "resources": {"limits": {"memory": "64Mi"}}}], hostUsers=True))
        h.wait_exit(uid)
        found = result(h.logs(uid))
    finally:
        if instance.is_dir():
            instance.rmdir()
    assert found["read own limit"] == "ok", f"the pod still reads its own cgroup (JVMs size themselves by it): {found}"
    for attack in ("raise own limit", "leave the cgroup", "tracing instance", "sysfs top"):
        assert found[attack] in ("EROFS", "EACCES", "EPERM", "ENOENT"), f"{attack}: {found}"
    assert found["tracing entries"] == [] and found["debug entries"] == [], found
    # Proof from the host's side: the limit runc set stayed.
    assert not list(Path("/sys/fs/cgroup/memory").glob(f"**/stowage-{uid}-c/memory.limit_in_bytes")) or all(
        int(p.read_text()) == 64 * 1024 * 1024 for p in Path("/sys/fs/cgroup/memory").glob(f"**/stowage-{uid}-c/memory.limit_in_bytes"))


def test_sec_host_files_only_root_may_read_stay_hidden(disk_harness):
    """The pod's root reads the host's / through an idmapped layer where the host's root shows as its
    own: without covers it would read every root-only host file (TLS keys under /etc/ssl/private,
    /etc/sudoers, a database's pg_hba.conf and data directory). Whatever an unprivileged host user
    cannot read (files without o+r, directories without o+x under /etc, /var, /opt, /srv, /boot) is
    covered in the pod."""
    from storage.agent.runtime.runc import HOST_SECRETS, host_private_paths
    private = [p for p in host_private_paths() if p not in HOST_SECRETS and not p.startswith(("/etc/shadow", "/etc/gshadow"))]
    files = [p for p in private if os.path.isfile(p) and os.path.getsize(p) > 0][:6]
    dirs = [p for p in private if os.path.isdir(p) and os.listdir(p)][:6]
    if not files and not dirs:
        pytest.skip("this host has no root-only file or directory with contents under the scanned roots")
    h = disk_harness
    uid = h.run(make_pod("private", [{"name": "c", "command": probe_script({"read": files, "list": dirs})}]))
    h.wait_exit(uid)
    found = result(h.logs(uid))
    for path in files:
        assert found[f"read {path}"] == "" or str(found[f"read {path}"]).startswith("error"), (path, found)
    for path in dirs:
        listing = found[f"list {path}"]
        assert listing == [] or str(listing).startswith("error"), (path, listing)
