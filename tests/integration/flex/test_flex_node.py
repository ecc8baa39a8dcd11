"""FlexVolume on the node and its attacher, on real loop devices through the test driver (FV1-FV9)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from flex_support import FlexEnv
from provisioners.flexvolume import FlexVolumeAttacher
from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from storage.api.volume_secrets import SECRET_DATA_KEY
from storage.system import loop, mounts
from volume_plugins.registry import default_registry

pytestmark = pytest.mark.root
MiB = 2**20
NODE = {"metadata": {"name": "n1"}}


def flex_pv(env: FlexEnv, name: str, driver: str = "stowage/loop", fs_type: str = "ext4", **options: str) -> dict:
    return {"metadata": {"name": name},
            "spec": {"capacity": {"storage": options.get("size", "64Mi")},
                     "flexVolume": {"driver": driver, "fsType": fs_type,
                                    "options": {"backingDir": str(env.backing), **options}}}}


def manager(env: FlexEnv, attachments: dict[str, dict[str, str]]) -> VolumeManager:
    vm = VolumeManager(env.base / "kubelet", default_registry(volume_plugin_dir=env.plugin_dir),
                       attachment_of=attachments.get)
    vm.reconstruct()
    return vm


def pod(uid: str, pv: dict, **kwargs) -> PodVolumes:
    return PodVolumes(uid, "ns", f"pod-{uid}", [VolumeRequest("data", pv["spec"], pv_name=pv["metadata"]["name"],
                                                              **kwargs)])


def test_fv1_fv5_fv6_fv8_attach_mountdevice_data_survives_pods_detach_and_expand(flex_env: FlexEnv) -> None:
    """FV1 the driver is found as stowage~loop/loop; FV5 attach by the attacher gives the device, the node
    waits for it (waitforattach) and mountdevice mounts it once at
    plugins/kubernetes.io/flexvolume/stowage/loop/mounts/<pv>; mount "Not supported" -> bind (FV3);
    FV6 unmountdevice when the last pod goes, then detach; FV8 expandvolume + the node's resize."""
    flex_env.install("stowage~loop")
    attacher = FlexVolumeAttacher(flex_env.plugin_dir)
    # xfs: it grows while mounted (online ext4 resize needs CAP_SYS_RESOURCE, withheld on this kind of host).
    pv = flex_pv(flex_env, "pv-loop", fs_type="xfs", size=str(320 * MiB))
    attachments: dict[str, dict[str, str]] = {}
    vm = manager(flex_env, attachments)

    _, errors = vm.setup_pod(pod("u1", pv))
    assert "waiting for volume pv-loop to be attached" in errors["data"]  # nothing before the attach (AD2)

    attachments["pv-loop"] = attacher.attach(pv, NODE)
    device = attachments["pv-loop"]["devicePath"]
    assert device.startswith("/dev/loop") and attacher.is_attached(pv, "n1") is True
    assert loop.find_by_backing_file(flex_env.backing / "pv-loop.img") == device

    paths, errors = vm.setup_pod(pod("u1", pv))
    assert errors == {}
    global_path = flex_env.base / "kubelet/plugins/kubernetes.io/flexvolume/stowage/loop/mounts/pv-loop"
    assert [e.source for e in mounts.mounts_at(global_path)] == [device]
    assert paths["data"] == str(flex_env.base / "kubelet/pods/u1/volumes/stowage~loop/data")
    Path(paths["data"], "hello").write_text("kept")

    vm.teardown_pod("u1")
    assert not mounts.mounts_under(flex_env.base / "kubelet")
    assert "loop unmountdevice " + str(global_path) in flex_env.calls()
    paths, errors = vm.setup_pod(pod("u2", pv))
    assert errors == {} and Path(paths["data"], "hello").read_text() == "kept"
    # "Not supported" is asked once a driver version: the second pod is bound without asking.
    assert [c for c in flex_env.calls() if c.startswith("loop mount ")] == [
        "loop mount " + str(flex_env.base / "kubelet/pods/u1/volumes/stowage~loop/data")]

    def fs_size() -> int:
        return int(subprocess.run(["df", "--output=size", "-B1", paths["data"]], capture_output=True, text=True,
                                  check=True).stdout.split()[-1])

    before = fs_size()
    assert attacher.expand(pv, 400 * MiB) == 400 * MiB
    assert (flex_env.backing / "pv-loop.img").stat().st_size == 400 * MiB
    assert vm.finish_resize("pv-loop")
    assert fs_size() >= before + 70 * MiB

    vm.teardown_pod("u2")
    attacher.detach(pv, "n1")
    assert loop.find_by_backing_file(flex_env.backing / "pv-loop.img") is None
    assert attacher.is_attached(pv, "n1") is False
    attacher.detach(pv, "n1")  # detaching what is not attached succeeds


def test_fv3_not_supported_waitforattach_and_mountdevice_fall_back_to_format_and_mount(flex_env: FlexEnv) -> None:
    """FV3: "Not supported" from waitforattach -> the attach's device path; from mountdevice -> the node
    formats (only a blank device) and mounts it itself; unmountdevice likewise -> a plain unmount."""
    flex_env.install("stowage~plain")
    attacher = FlexVolumeAttacher(flex_env.plugin_dir)
    pv = flex_pv(flex_env, "pv-plain", driver="stowage/plain")
    attachments = {"pv-plain": attacher.attach(pv, NODE)}
    vm = manager(flex_env, attachments)
    paths, errors = vm.setup_pod(pod("u1", pv))
    assert errors == {}
    entry = mounts.top_mount(paths["data"])
    assert entry is not None and entry.fstype == "ext4"
    vm.teardown_pod("u1")
    assert not mounts.mounts_under(flex_env.base / "kubelet")
    attacher.detach(pv, "n1")
    calls = flex_env.calls()
    assert "plain waitforattach " + attachments["pv-plain"]["devicePath"] in calls
    assert any(c.startswith("plain mountdevice ") for c in calls)
    assert loop.find_by_backing_file(flex_env.backing / "pv-plain.img") is None


def test_fv4_fv7_non_attachable_driver_mount_unmount_with_secret_never_logged(flex_env: FlexEnv) -> None:
    """FV4: attach false -> only mount and unmount, no attachment waited for; FV7 the options carry the
    pod, the volume, fsType, readwrite and the Secret as kubernetes.io/secret/<key> (base64); the
    secret's value is in no log line."""
    flex_env.install("stowage~tmpfs")
    secret = "s3cr3t-flex-password"
    source = {"flexVolume": {"driver": "stowage/tmpfs", "fsType": "ext4", "secretRef": {"name": "creds"},
                             "options": {"color": "blue"}}}
    vm = manager(flex_env, {})
    request = VolumeRequest("scratch", source, data={SECRET_DATA_KEY: {"password": secret.encode()}})
    with capture_logs() as logs:
        paths, errors = vm.setup_pod(PodVolumes("u1", "ns", "p1", [request]))
    assert errors == {}
    assert paths["scratch"] == str(flex_env.base / "kubelet/pods/u1/volumes/stowage~tmpfs/scratch")
    assert mounts.top_mount(paths["scratch"]).fstype == "tmpfs"
    got = json.loads(Path(paths["scratch"], "options.json").read_text())
    assert got["kubernetes.io/secret/password"] == base64.b64encode(secret.encode()).decode()
    assert got["color"] == "blue" and got["kubernetes.io/fsType"] == "ext4"
    assert got["kubernetes.io/readwrite"] == "rw" and got["kubernetes.io/pvOrVolumeName"] == "scratch"
    assert (got["kubernetes.io/pod.name"], got["kubernetes.io/pod.namespace"], got["kubernetes.io/pod.uid"]) == \
        ("p1", "ns", "u1")
    vm.teardown_pod("u1")
    assert "tmpfs unmount " + paths["scratch"] in flex_env.calls()
    assert not mounts.mounts_under(flex_env.base / "kubelet")
    text = repr(logs)
    assert secret not in text and base64.b64encode(secret.encode()).decode() not in text


def test_fv7_missing_secret_waits(flex_env: FlexEnv) -> None:
    """FV7: a secretRef whose Secret does not exist -> the volume waits, naming the Secret."""
    flex_env.install("stowage~tmpfs")
    vm = manager(flex_env, {})
    source = {"flexVolume": {"driver": "stowage/tmpfs", "secretRef": {"name": "nope"}}}
    _, errors = vm.setup_pod(PodVolumes("u1", "ns", "p1", [VolumeRequest("v", source, data={SECRET_DATA_KEY: None})]))
    assert 'secret "nope" not found' in errors["v"]
    vm.teardown_pod("u1")


def test_fv9_failure_answer_is_the_error_with_the_drivers_message(flex_env: FlexEnv) -> None:
    """FV9: status Failure -> the step fails with the driver's message (Kubernetes' wording); the
    attacher's error reaches FailedAttachVolume the same way."""
    flex_env.install("stowage~tmpfs")
    flex_env.install("stowage~loop")
    vm = manager(flex_env, {})
    source = {"flexVolume": {"driver": "stowage/tmpfs", "options": {"fail": "quota exceeded on backend"}}}
    _, errors = vm.setup_pod(PodVolumes("u1", "ns", "p1", [VolumeRequest("v", source)]))
    assert errors["v"] == "mount command failed, status: Failure, reason: quota exceeded on backend"
    assert not mounts.mounts_under(flex_env.base / "kubelet")
    vm.teardown_pod("u1")
    with pytest.raises(Exception, match="attach command failed, status: Failure, reason: no capacity"):
        FlexVolumeAttacher(flex_env.plugin_dir).attach(flex_pv(flex_env, "pv-x", fail="no capacity"), NODE)


def test_fv2_driver_added_while_running_is_found_and_a_changed_driver_is_initialised_again(flex_env: FlexEnv) -> None:
    """FV2: a volume of a driver not installed waits, naming the directory; copying the driver in makes
    the next attempt use it (no restart); a rewritten driver runs init again."""
    vm = manager(flex_env, {})
    source = {"flexVolume": {"driver": "stowage/tmpfs"}}
    request = PodVolumes("u1", "ns", "p1", [VolumeRequest("v", source)])
    _, errors = vm.setup_pod(request)
    assert f'no FlexVolume driver "stowage/tmpfs" in {flex_env.plugin_dir}' in errors["v"]
    flex_env.install("stowage~tmpfs")
    paths, errors = vm.setup_pod(request)
    assert errors == {} and mounts.is_mount_point(paths["v"])
    inits = flex_env.calls().count("tmpfs init ")
    vm.setup_pod(request)
    assert flex_env.calls().count("tmpfs init ") == inits  # init once per driver version
    exe = (flex_env.plugin_dir / "stowage~tmpfs" / "tmpfs").resolve()
    stat = exe.stat()
    os.utime(exe, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a new version of the driver
    vm.setup_pod(request)
    assert flex_env.calls().count("tmpfs init ") == inits + 1
    vm.teardown_pod("u1")
    assert not mounts.mounts_under(flex_env.base / "kubelet")


def test_fv9_unparseable_output_and_bad_driver_names(flex_env: FlexEnv) -> None:
    """FV9: output that is not the JSON answer -> an error quoting it; FV1 a driver name with '..' or
    '~' is refused."""
    bad = flex_env.plugin_dir / "stowage~bad"
    bad.mkdir()
    (bad / "bad").write_text('#!/bin/sh\nif [ "$1" = init ]; then echo \'{"status": "Success", '
                             '"capabilities": {"attach": false}}\'; '
                             'else echo "segfault in driver"; fi\n')
    (bad / "bad").chmod(0o755)
    vm = manager(flex_env, {})
    _, errors = vm.setup_pod(PodVolumes("u1", "ns", "p1", [VolumeRequest("v", {"flexVolume": {"driver": "stowage/bad"}})]))
    assert "failed to unmarshal output" in errors["v"] and "segfault in driver" in errors["v"]
    _, errors = vm.setup_pod(PodVolumes("u1", "ns", "p1", [VolumeRequest("w", {"flexVolume": {"driver": "a/../b"}})]))
    assert 'flexVolume.driver: Invalid value: "a/../b"' in errors["w"]
    vm.teardown_pod("u1")
