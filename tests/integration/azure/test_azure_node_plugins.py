"""Node side of Azure disks (CZ8) and Azure File (CZ9, CZ10)."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any, Iterator

import pytest
import structlog

from storage.agent.resolve import resolve_pod_volumes
from storage.errors import PermanentError, StowageError, TemporaryError
from storage.system import loop
from storage.system.devices import DeviceResolver
from storage.system.executor import RecordingExecutor
from volume_plugins.azure_disk import AzureDiskPlugin
from volume_plugins.azure_file import DATA_KEY, AzureFilePlugin, cifs_supported
from volume_plugins.base import VolumeContext
from volume_plugins.registry import default_registry

KEY = "c2VjcmV0LWtleS1ub3QtZm9yLWxvZ3M9PQ=="


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    device = loop.attach(image, direct_io=False)
    try:
        yield device
    finally:
        loop.detach(device)


def _disk_ctx(tmp_path: Path, attachment: dict[str, str], uri: str = "http://h/acct/vhds/pvc-1.vhd") -> VolumeContext:
    source = {"azureDisk": {"diskName": "pvc-1.vhd", "diskURI": uri, "kind": "Dedicated", "cachingMode": "None"}}
    return VolumeContext(pod_uid="u", pod_namespace="default", pod_name="p", volume_name="v", source=source,
                         target=tmp_path / "t", pv_name="pvc-1", attachment=attachment)


def test_disk_found_through_its_lun_link(tmp_path: Path, loop_device: str) -> None:
    """CZ8: the device is the block device behind <dev_disk>/azure/scsi1/lun<N>, N from the attachment;
    nothing before the attacher answered, nothing for another LUN or a stale attachment of another disk."""
    dev_disk = tmp_path / "dev-disk"
    (dev_disk / "azure/scsi1").mkdir(parents=True)
    (dev_disk / "azure/scsi1/lun3").symlink_to(loop_device)
    plugin = AzureDiskPlugin(resolver=DeviceResolver(dev_disk=dev_disk))
    assert plugin.find_device(_disk_ctx(tmp_path, {})) is None
    assert plugin.find_device(_disk_ctx(tmp_path, {"lun": "2"})) is None
    found = plugin.find_device(_disk_ctx(tmp_path, {"lun": "3", "diskURI": "http://h/acct/vhds/pvc-1.vhd"}))
    assert found is not None and found.path == os.path.realpath(loop_device) and found.fs_type == "ext4"
    assert plugin.find_device(_disk_ctx(tmp_path, {"lun": "3", "diskURI": "http://h/acct/vhds/other.vhd"})) is None
    with pytest.raises(PermanentError, match="lun="):
        plugin.find_device(_disk_ctx(tmp_path, {"lun": "../../x"}))


def test_link_to_a_non_device_is_not_a_disk(tmp_path: Path) -> None:
    """CZ8: a link to a regular file is never handed to mkfs."""
    dev_disk = tmp_path / "dev-disk"
    (dev_disk / "azure/scsi1").mkdir(parents=True)
    (tmp_path / "plain").write_text("x")
    (dev_disk / "azure/scsi1/lun0").symlink_to(tmp_path / "plain")
    plugin = AzureDiskPlugin(resolver=DeviceResolver(dev_disk=dev_disk))
    assert plugin.find_device(_disk_ctx(tmp_path, {"lun": "0"})) is None


def test_default_registry_has_both_azure_plugins(tmp_path: Path) -> None:
    """CZ8, CZ9: the agent's registry picks the Azure plugins by source key; disks use the agent's resolver."""
    resolver = DeviceResolver(dev_disk=tmp_path)
    registry = default_registry(resolver=resolver)
    disk = registry.find({"azureDisk": {"diskName": "a.vhd"}})
    assert isinstance(disk, AzureDiskPlugin) and disk.resolver is resolver and disk.attachable
    assert disk.attach_limit_key == "attachable-volumes-azure-disk" and disk.default_attach_limit == 16
    assert isinstance(registry.find({"azureFile": {"shareName": "s"}}), AzureFilePlugin)


# ------------------------------------------------------------ Azure File

def _file_ctx(tmp_path: Path, data: Any, executor: Any, read_only: bool = False,
              mount_options: list[str] | None = None, **spec: Any) -> VolumeContext:
    source: dict[str, Any] = {"azureFile": {"secretName": "azure-secret", "shareName": "share1", **spec}}
    if mount_options:
        source["mountOptions"] = mount_options
    return VolumeContext(pod_uid="u", pod_namespace="default", pod_name="p", volume_name="v", source=source,
                         target=tmp_path / "target", read_only=read_only, data={DATA_KEY: data}, executor=executor)


@pytest.fixture
def with_cifs(tmp_path: Path) -> Path:
    """A /proc/filesystems stand-in that lists cifs, so the mount command is built and run (recorded)."""
    path = tmp_path / "filesystems"
    path.write_text("nodev\tsysfs\n\text4\nnodev\tcifs\n")
    return path


def test_cifs_mount_command_and_credentials_file(tmp_path: Path, with_cifs: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """CZ9, CZ10: the documented cifs options, the PV's mountOptions and ro; the key only in a 0600
    credentials file that exists while mount runs and is gone after; never on the command line or in logs."""
    seen: dict[str, Any] = {}

    def mount(argv: list[str]) -> tuple[int, str, str]:
        creds = next(o.split("=", 1)[1] for o in argv[-1].split(",") if o.startswith("credentials="))
        seen["file"] = creds
        seen["mode"] = stat.S_IMODE(os.stat(creds).st_mode)
        seen["content"] = Path(creds).read_text()
        return 0, "", ""

    executor = RecordingExecutor(responses={("mount", "-t", "cifs"): mount})
    plugin = AzureFilePlugin(filesystems=with_cifs)
    data = {"azurestorageaccountname": b"acct1", "azurestorageaccountkey": KEY.encode()}
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as captured:
        path = plugin.setup(_file_ctx(tmp_path, data, executor, read_only=True, mount_options=["uid=1000"]))
    assert path == tmp_path / "target" and path.is_dir()
    [argv] = executor.calls
    assert argv[:5] == ["mount", "-t", "cifs", "//acct1.file.core.windows.net/share1", str(tmp_path / "target")]
    options = argv[6].split(",")
    assert options == ["vers=3.0", "username=acct1", f"credentials={seen['file']}", "dir_mode=0777", "file_mode=0777",
                       "serverino", "nosharesock", "actimeo=30", "mfsymlinks", "uid=1000", "ro"]
    assert seen["mode"] == 0o600 and seen["content"] == f"username=acct1\npassword={KEY}\n"
    assert not Path(seen["file"]).exists()
    texts = [" ".join(argv)] + [r.getMessage() + str(r.__dict__) for r in caplog.records] + [str(e) for e in captured]
    assert all(KEY not in t for t in texts)


def test_failed_mount_error_hides_key_and_removes_credentials(tmp_path: Path, with_cifs: Path) -> None:
    """CZ10: a mount that fails (even one echoing the key) gives an error without the key; the file is gone."""
    files: list[str] = []

    def fail(argv: list[str]) -> tuple[int, str, str]:
        files.append(next(o.split("=", 1)[1] for o in argv[-1].split(",") if o.startswith("credentials=")))
        return 32, "", f"mount error(13): Permission denied password={KEY}"

    plugin = AzureFilePlugin(filesystems=with_cifs)
    data = {"azurestorageaccountname": b"acct1", "azurestorageaccountkey": KEY.encode()}
    with pytest.raises(TemporaryError) as info:
        plugin.setup(_file_ctx(tmp_path, data, RecordingExecutor(responses={("mount",): fail})))
    assert "Permission denied" in str(info.value) and KEY not in str(info.value) and KEY not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert files and not Path(files[0]).exists()


@pytest.mark.parametrize("data,spec,error,needle", [
    (None, {}, TemporaryError, "azure-secret"),
    ({"azurestorageaccountname": b"a"}, {}, PermanentError, "azurestorageaccountkey"),
    ({"azurestorageaccountname": b"a", "azurestorageaccountkey": b"k"}, {"shareName": ""}, PermanentError, "shareName"),
    ({"azurestorageaccountname": b"a", "azurestorageaccountkey": b"k"}, {"secretName": ""}, PermanentError, "secretName"),
])
def test_azure_file_errors_name_the_problem(tmp_path: Path, with_cifs: Path, data: Any, spec: dict[str, Any],
                                            error: type[StowageError], needle: str) -> None:
    """CZ9: a missing Secret waits; missing keys, share or secret name fail naming the field; nothing is mounted."""
    executor = RecordingExecutor()
    with pytest.raises(error, match=needle):
        AzureFilePlugin(filesystems=with_cifs).setup(_file_ctx(tmp_path, data, executor, **spec))
    assert executor.calls == []


def test_kernel_without_cifs_is_reported(tmp_path: Path) -> None:
    """CZ9: on a kernel without a CIFS client the mount is not tried and the error says why."""
    filesystems = tmp_path / "filesystems"
    filesystems.write_text("nodev\tsysfs\n\text4\n")
    executor = RecordingExecutor()
    data = {"azurestorageaccountname": b"a", "azurestorageaccountkey": b"k"}
    with pytest.raises(PermanentError, match="no CIFS client"):
        AzureFilePlugin(filesystems=filesystems).setup(_file_ctx(tmp_path, data, executor))
    assert executor.calls == []


def test_real_cifs_mount_needs_a_kernel_client(tmp_path: Path) -> None:
    """CZ9: on this host the real mount is only attempted when the kernel has CIFS."""
    if not cifs_supported():
        pytest.skip("this kernel has no CIFS client (cifs not in /proc/filesystems): the SMB mount cannot run here")
    data = {"azurestorageaccountname": b"a", "azurestorageaccountkey": b"k"}
    with pytest.raises(TemporaryError, match="mounting //a.file"):  # no such server: the mount itself fails
        AzureFilePlugin().setup(_file_ctx(tmp_path, data, RecordingExecutor(responses={("mount",): (32, "", "no")})))


class _Reader:
    def __init__(self, objects: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        self.objects = objects

    def get(self, resource: str, name: str, namespace: str = "") -> dict[str, Any]:
        from storage.errors import NotFound

        try:
            return self.objects[(resource, namespace, name)]
        except KeyError:
            raise NotFound(f"{resource} {name} not found") from None


def test_agent_resolves_the_share_secret(tmp_path: Path) -> None:
    """CZ9: inline volumes read the Secret from the pod's namespace, PVs from secretNamespace ("default" if unset)."""
    import base64

    secret = {"data": {"azurestorageaccountname": base64.b64encode(b"acct").decode()}}
    pod = {"metadata": {"name": "p", "namespace": "apps", "uid": "u"},
           "spec": {"volumes": [{"name": "inline", "azureFile": {"secretName": "s1", "shareName": "x"}},
                                {"name": "claimed", "persistentVolumeClaim": {"claimName": "c"}}]}}
    objects = {
        ("secrets", "apps", "s1"): secret,
        ("persistentvolumeclaims", "apps", "c"): {"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}},
        ("persistentvolumes", "", "pv1"): {"spec": {"azureFile": {"secretName": "s2", "shareName": "y"}}},
        ("secrets", "default", "s2"): secret,
    }
    reader = _Reader(objects)
    volumes = resolve_pod_volumes(pod, reader)
    by_name = {v.name: v for v in volumes.volumes}
    assert by_name["inline"].data[DATA_KEY] == {"azurestorageaccountname": b"acct"}
    assert by_name["claimed"].data[DATA_KEY] == {"azurestorageaccountname": b"acct"}
    del objects[("secrets", "default", "s2")]
    assert resolve_pod_volumes(pod, reader).volumes[1].data[DATA_KEY] is None


def test_node_may_read_the_azure_file_secret_of_its_pods(tmp_path: Path) -> None:
    """CZ9: the node authorizer's graph has the azureFile Secret edges Kubernetes has: an inline
    volume's (pod namespace) and a bound PV's (secretNamespace, "default" if unset); not others."""
    from storage.apiserver.authz_index import AuthzIndex
    from storage.store import open_store
    from support import wait_for

    store = open_store(str(tmp_path / "store.db"))
    index = AuthzIndex(store)
    try:
        store.create("persistentvolumes", {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv1"},
                                           "spec": {"azureFile": {"secretName": "pv-secret", "shareName": "s"},
                                                    "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                                                    "claimRef": {"namespace": "apps", "name": "c"}}})
        store.create("persistentvolumeclaims", {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                                "metadata": {"name": "c", "namespace": "apps"},
                                                "spec": {"volumeName": "pv1", "accessModes": ["ReadWriteMany"],
                                                         "resources": {"requests": {"storage": "1Gi"}}}})
        store.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "apps"},
                              "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}],
                                       "volumes": [{"name": "a", "azureFile": {"secretName": "inline-secret", "shareName": "x"}},
                                                   {"name": "b", "persistentVolumeClaim": {"claimName": "c"}}]}})
        index.start()
        wait_for(lambda: index.node_uses("n1", "secrets", "apps", "inline-secret"), "the inline Secret edge", 10)
        assert index.node_uses("n1", "secrets", "default", "pv-secret")
        assert not index.node_uses("n2", "secrets", "apps", "inline-secret")
        assert not index.node_uses("n2", "secrets", "default", "pv-secret")
        assert not index.node_uses("n1", "secrets", "apps", "pv-secret")
    finally:
        index.close()
        store.close()
