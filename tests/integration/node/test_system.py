"""storage/system: executor, mount table, loop devices, command construction."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import structlog

from storage.system import blockdev, devices, loop, mounts
from storage.system.executor import CommandError, Executor, RecordingExecutor
from support import wait_for

SAMPLE = (
    "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
    "37 36 7:3 / /var/lib/x ro,relatime shared:2 - xfs /dev/loop3 ro,attr2\n"
)


def test_parse_mountinfo_unescapes_and_splits_optional_fields() -> None:
    a, b = mounts.parse_mountinfo(SAMPLE)
    assert a.mount_point == "/mnt/with space" and a.root == "/mnt1" and a.fstype == "ext3"
    assert a.source == "/dev/root" and not a.read_only
    assert b.major_minor == "7:3" and b.read_only and b.super_options == ("ro", "attr2")


def test_executor_error_names_the_command_and_its_stderr() -> None:
    with pytest.raises(CommandError) as info:
        Executor().run(["sh", "-c", "echo boom >&2; exit 3"])
    assert info.value.returncode == 3 and "sh exited with status 3: boom" in str(info.value)
    with pytest.raises(CommandError, match="command not found"):
        Executor().run(["stowage-no-such-tool"])


def test_executor_never_shows_secrets_in_errors() -> None:
    with pytest.raises(CommandError) as info:
        Executor().run(["sh", "-c", "echo key=hunter2 >&2; exit 1", "hunter2"], secrets=["hunter2"])
    assert "hunter2" not in str(info.value) and "hunter2" not in " ".join(info.value.argv)


def test_recording_executor_builds_commands_without_running_them() -> None:
    rec = RecordingExecutor(responses={("blkid",): (2, "", "")})
    assert blockdev.probe_filesystem("/dev/xvdf", executor=rec) is None
    blockdev.mkfs("/dev/xvdf", "xfs", executor=rec)
    blockdev.resize_filesystem("/dev/xvdf", "/mnt/v", "btrfs", executor=rec)
    mounts.bind_mount("/a", "/b", read_only=True, executor=rec)
    assert rec.calls == [
        ["blkid", "-p", "-o", "export", "/dev/xvdf"],
        ["mkfs.xfs", "-q", "/dev/xvdf"],
        ["btrfs", "filesystem", "resize", "max", "/mnt/v"],
        ["mount", "--bind", "/a", "/b"],
        ["mount", "-o", "remount,bind,ro", "/b"],
    ]


def test_probe_reports_partition_tables_and_ambivalence_as_not_blank() -> None:
    rec = RecordingExecutor(responses={("blkid",): (0, "PTUUID=1\nPTTYPE=gpt\n", "")})
    assert blockdev.probe_filesystem("/dev/sdz", executor=rec) == "partition-table:gpt"
    rec = RecordingExecutor(responses={("blkid",): (8, "", "ambivalent result")})
    assert blockdev.probe_filesystem("/dev/sdz", executor=rec) == "ambivalent"


def test_mkfs_rejects_unknown_filesystems() -> None:
    with pytest.raises(Exception, match="fsType: Unsupported value"):
        blockdev.mkfs_argv("/dev/x", "ntfs")


def test_loop_attach_find_refresh_detach(node_tmp: Path) -> None:
    img = node_tmp / "f.img"
    img.write_bytes(b"")
    with open(img, "r+b") as f:
        f.truncate(8 << 20)
    dev = loop.attach(img)
    assert loop.find_by_backing_file(img) == dev and loop.direct_io_enabled(dev)
    assert blockdev.device_size(dev) == 8 << 20
    with open(img, "r+b") as f:
        f.truncate(16 << 20)
    loop.refresh_capacity(dev)
    assert blockdev.device_size(dev) == 16 << 20
    assert loop.loops_under(node_tmp) == {dev: str(img)}
    loop.detach(dev)
    assert loop.find_by_backing_file(img) is None


def test_a_detach_while_another_process_holds_the_device_returns_once_the_kernel_released_it(node_tmp: Path) -> None:
    """A detach while another process has the device open only marks it for auto-clear; ``detach``
    returns once the device is gone, so a look-up right after it cannot find the dying device."""
    img = node_tmp / "held.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    dev = loop.attach(img)
    # The holder opens the device, says so, and closes it when told (or after 20 s, whatever happens).
    holder = subprocess.Popen([sys.executable, "-c",
                               "import os, sys, select; fd = os.open(sys.argv[1], os.O_RDONLY); print('open', flush=True); "
                               "select.select([sys.stdin], [], [], 20); os.close(fd)", dev],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        threading.Timer(0.3, holder.stdin.close).start()  # the holder lets go while detach waits
        loop.detach(dev)
        assert loop.find_by_backing_file(img) is None and not loop.loops_under(node_tmp)
    finally:
        if holder.stdin and not holder.stdin.closed:
            holder.stdin.close()
        holder.wait(30)
        for left in loop.loops_under(node_tmp):
            subprocess.run(["losetup", "--detach", left], check=False)


def test_a_detach_whose_device_stays_held_warns_and_leaves_it_to_the_kernel(node_tmp: Path) -> None:
    img = node_tmp / "held.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    dev = loop.attach(img)
    fd = os.open(dev, os.O_RDONLY)
    try:
        with structlog.testing.capture_logs() as logs:
            loop.detach(dev, release_wait=0.2)
        assert loop.loops_under(node_tmp) == {dev: str(img)}  # still attached: pending auto-clear
        assert [e["device"] for e in logs if e["event"] == "loop.detach_deferred"] == [dev]
    finally:
        os.close(fd)
    wait_for(lambda: not loop.loops_under(node_tmp), "the device released on its last close", 10)


def test_read_only_bind_and_unmount_all_under(node_tmp: Path) -> None:
    src, dst = node_tmp / "src", node_tmp / "dst"
    src.mkdir()
    dst.mkdir()
    mounts.mount("tmpfs", src, "tmpfs", ["size=1m"])
    mounts.bind_mount(src, dst, read_only=True)
    assert mounts.top_mount(dst).read_only and not mounts.top_mount(src).read_only
    with pytest.raises(OSError):
        (dst / "x").write_text("no")
    assert {e.mount_point for e in mounts.mounts_under(node_tmp)} == {str(dst), str(src)}
    mounts.unmount_all_under(node_tmp)
    assert not mounts.mounts_under(node_tmp)


def test_mount_table_answers_alike_before_and_after_its_index(node_tmp: Path) -> None:
    """PF63, PF81: a table answers its first two questions by a scan each and builds its index at the
    third; both give the mounts stacked on a path bottom first, through a symlink too."""
    point = node_tmp / "stacked"
    point.mkdir()
    (node_tmp / "link").symlink_to(point)
    mounts.mount("tmpfs", point, "tmpfs", ["size=1m"])
    try:
        mounts.mount("tmpfs", point, "tmpfs", ["size=2m"])
        try:
            for first in ("at", "is_mount_point", "top"):
                table = mounts.MountTable.read()
                answers = {"at": lambda p: [e.super_options for e in table.at(p)],
                           "is_mount_point": table.is_mount_point,
                           "top": lambda p: table.top(p).super_options}
                before = answers[first](node_tmp / "link")  # a scan
                assert answers[first](point) == before  # a scan again
                assert table._by_point is None
                assert answers[first](node_tmp / "link") == before  # the index
                assert table._by_point is not None
                if first == "at":
                    assert [next(o for o in opts if o.startswith("size=")) for opts in before] == [
                        "size=1024k", "size=2048k"]
                assert not table.is_mount_point(node_tmp) and table.at(node_tmp / "nothing") == []
        finally:
            mounts.unmount(point)
    finally:
        mounts.unmount(point)


def test_under_each_lists_what_under_lists_for_each_prefix_in_one_pass(node_tmp: Path) -> None:
    """PF69: a container's unmount asks for the mounts under five paths of one table: one pass gives each
    prefix what ``under`` gives it (deepest first), a mount below two prefixes once (under the first), and
    the mounts elsewhere (other pods', a sibling whose name only starts alike) under none."""
    made = []
    for rel in ("c/rootfs", "c/rootfs/proc", "c/rootfs/proc/x", "c/scratch", "c/scratch2", "other/rootfs"):
        (node_tmp / rel).mkdir(parents=True, exist_ok=True)
        mounts.mount("tmpfs", node_tmp / rel, "tmpfs", ["size=1m"])
        made.append(node_tmp / rel)
    try:
        table = mounts.MountTable.read()
        prefixes = [node_tmp / "c" / "rootfs", node_tmp / "c" / "rootfs", node_tmp / "c" / "scratch",
                    node_tmp / "c" / "lower"]
        each = table.under_each(prefixes)
        names = [[e.mount_point for e in entries] for entries in each]
        rootfs = str(node_tmp / "c" / "rootfs")
        assert names == [[f"{rootfs}/proc/x", f"{rootfs}/proc", rootfs], [], [str(node_tmp / "c" / "scratch")], []]
        assert each[0] == table.under(prefixes[0]) and each[2] == table.under(prefixes[2])
        assert [e.mount_point for e in table.under_each([node_tmp])[0]] == [
            e.mount_point for e in table.under(node_tmp)]
    finally:
        for point in reversed(made):
            mounts.unmount(point)


def test_find_device_by_unknown_serial_is_none() -> None:
    assert devices.DeviceResolver().find(serial="vol-does-not-exist", by_id=("nvme-Amazon_missing",)) is None


def test_find_device_by_serial_ignores_dashes_and_case(tmp_path: Path) -> None:
    """An EBS NVMe disk's serial is "vol0123abc" while the API names "vol-0123ABC"."""
    (tmp_path / "nvme1n1" / "device").mkdir(parents=True)
    (tmp_path / "nvme1n1" / "device" / "serial").write_text("vol0123abc   \n")
    (tmp_path / "vda").mkdir()
    (tmp_path / "vda" / "serial").write_text("other\n")
    resolver = devices.DeviceResolver(dev_disk=tmp_path / "no-udev", sys_block=tmp_path)
    assert resolver.find(serial="vol-0123ABC") == "/dev/nvme1n1"
    assert resolver.find(serial="vol-0999") is None
