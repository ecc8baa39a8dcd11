"""CSI drivers registering through the agent's plugin registration directory, with the kubelet's
pluginregistration v1 protocol (CS15)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from storage.errors import NotFound

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_cluster import Cluster, cluster, claim, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)
from csi_drivers import TEST_NAME, start_test_driver, stop_driver, unmount_under  # noqa: E402
from provisioners import csi as csi_prov  # noqa: E402
from storage.agent.plugin_watcher import PluginWatcher  # noqa: E402
from storage.system.csi import pluginregistration_pb2 as rpb  # noqa: E402
from volume_plugins import csi as csi_plugin  # noqa: E402

REGISTRAR = Path(__file__).resolve().parent / "csi_registrar.py"
SLEEP = "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done"


def _start_registrar(endpoint: str, registry: Path, status: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(REGISTRAR), "--csi-address", endpoint,
                             "--kubelet-registration-path", endpoint.removeprefix("unix://"),
                             "--plugin-registration-path", str(registry), "--status-file", str(status)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def test_version_and_type_checks() -> None:
    """CS15: only CSIPlugin with a 1.x version and a name is accepted."""
    ok = rpb.PluginInfo(type="CSIPlugin", name="d", endpoint="/x", supported_versions=["1.0.0"])
    assert PluginWatcher._check(ok) is None
    assert "not supported" in PluginWatcher._check(rpb.PluginInfo(type="DevicePlugin", name="d",
                                                                   supported_versions=["1.0.0"]))
    assert "CSI 1.x" in PluginWatcher._check(rpb.PluginInfo(type="CSIPlugin", name="d", supported_versions=["0.3.0"]))
    assert "empty" in PluginWatcher._check(rpb.PluginInfo(type="CSIPlugin", supported_versions=["1.0.0"]))


@pytest.fixture
def short_tmp():
    # Unix socket paths are limited to 107 bytes: pytest's tmp_path is too deep for them.
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="stowage-csi-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_registrar_socket_registers_and_unregisters(short_tmp: Path) -> None:
    """CS15: GetInfo, registration of the driver's Node service, NotifyRegistrationStatus(true); the
    socket gone unregisters the driver."""
    tmp_path = short_tmp
    drv = start_test_driver(tmp_path / "driver", "n1")
    registry, status = tmp_path / "plugins_registry", tmp_path / "status.json"
    registrar = _start_registrar(drv.endpoint, registry, status)
    changes: list[int] = []
    watcher = PluginWatcher(registry, threading.Event(), lambda: changes.append(1),
                            csi_plugin.register_node_driver, csi_plugin.unregister_node_driver)
    try:
        wait_until(lambda: watcher.scan() and True, "the driver registered", 30)
        assert csi_plugin.node_drivers() == {TEST_NAME: drv.endpoint}
        wait_until(status.exists, "NotifyRegistrationStatus")
        assert json.loads(status.read_text()) == {"registered": True, "error": ""}
        stop_driver(registrar)
        wait_until(lambda: watcher.scan() and True, "the driver unregistered", 30)
        assert TEST_NAME not in csi_plugin.node_drivers() and len(changes) == 2
    finally:
        stop_driver(registrar)
        csi_plugin.unregister_node_driver(TEST_NAME)
        stop_driver(drv.proc)


def test_pod_on_a_driver_registered_through_the_registration_socket(cluster: Cluster) -> None:
    """CS15, CS11: a driver whose registrar appears after the agent started gets the Node's nodeid
    annotation and CSINode, and serves a claim and a pod (the control plane follows the node's
    registration, as `stowage up` does)."""
    drv = start_test_driver(cluster.base / "driver", "n1")
    mirror = lambda name, ep: csi_prov.register_driver(name, ep) if ep else csi_prov.unregister_driver(name)  # noqa: E731
    csi_plugin.add_registration_listener(mirror)
    registrar = None
    try:
        cluster.start_controllers()
        cluster.add_agent("n1")
        registrar = _start_registrar(drv.endpoint, cluster.agent_dir("n1") / "plugins_registry",
                                     cluster.base / "status.json")

        def registered() -> bool:
            node = cluster.client.get("nodes", "n1")
            return TEST_NAME in (node["metadata"].get("annotations") or {}).get("csi.volume.kubernetes.io/nodeid", "")

        wait_until(registered, "the nodeid annotation", 30)
        # The CSINode is written after the Node's annotation: wait for it too (NotFound counts as "not yet").

        def csinode_driver() -> str | None:
            try:
                return cluster.client.get("csinodes", "n1")["spec"]["drivers"][0]["name"]
            except (NotFound, IndexError, KeyError):
                return None
        assert wait_until(csinode_driver, "the CSINode", 30) == TEST_NAME
        cluster.apply({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "csi"},
                       "provisioner": TEST_NAME, "volumeBindingMode": "WaitForFirstConsumer"},
                      claim("data", "16Mi", "csi"), pod("p", f"echo hi > /data/f && {SLEEP}", claims={"data": "/data"}))
        cluster.wait_running("p", timeout=120)
        cluster.client.delete("pods", "p", "default")
        cluster.wait_gone("pods", "p", "default")
        cluster.client.delete("persistentvolumeclaims", "data", "default")
    finally:
        if registrar is not None:
            stop_driver(registrar)
        csi_plugin.remove_registration_listener(mirror)
        csi_plugin.unregister_node_driver(TEST_NAME)
        csi_prov.unregister_driver(TEST_NAME)
        stop_driver(drv.proc)
        unmount_under(cluster.base)
