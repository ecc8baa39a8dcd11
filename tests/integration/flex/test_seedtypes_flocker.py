"""flocker volumes through a recording fake of Flocker's control service (SV5-SV7)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest

from flex_support import FlexEnv
from flocker_fake import THIS_HOST, FlockerFake
from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from storage.system import mounts
from volume_plugins.registry import default_registry

pytestmark = pytest.mark.root


@pytest.fixture
def flocker(flex_env: FlexEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[FlockerFake]:
    with FlockerFake(flex_env.base) as fake:
        monkeypatch.setenv("FLOCKER_CONTROL_SERVICE_URL", fake.url)
        yield fake


def setup(env: FlexEnv, source: dict, uid: str = "u1") -> tuple[VolumeManager, dict[str, str], dict[str, str]]:
    vm = VolumeManager(env.base / "kubelet", default_registry(volume_plugin_dir=env.plugin_dir))
    paths, errors = vm.setup_pod(PodVolumes(uid, "ns", "p1", [VolumeRequest("db", {"flocker": source})]))
    return vm, paths, errors


def test_sv5_a_named_dataset_is_created_on_this_node_and_bound(flex_env: FlexEnv, flocker: FlockerFake) -> None:
    """SV5: datasetName unknown -> created with this node (found by its address) as primary; the plugin
    waits for the state to show it here, then binds its path."""
    vm, paths, errors = setup(flex_env, {"datasetName": "orders"})
    assert errors == {}
    [created] = [body for method, path, body in flocker.requests if method == "POST"]
    assert created["primary"] == flocker.nodes[THIS_HOST] and created["metadata"] == {"name": "orders"}
    assert created["maximum_size"] == 10 * 2**30
    [dataset_id] = flocker.config
    Path(paths["db"], "row").write_text("1")
    assert (flex_env.base / "flocker" / dataset_id / "row").read_text() == "1"
    vm.teardown_pod("u1")
    assert not mounts.mounts_under(flex_env.base / "kubelet")
    vm, paths, errors = setup(flex_env, {"datasetName": "orders"}, uid="u2")  # found by name this time
    assert errors == {} and Path(paths["db"], "row").read_text() == "1"
    assert len(flocker.config) == 1
    vm.teardown_pod("u2")


def test_sv6_a_dataset_elsewhere_is_moved_here_first(flex_env: FlexEnv, flocker: FlockerFake) -> None:
    """SV6: datasetUUID whose primary is another node -> POST its new primary, then bind once converged."""
    dataset_id = flocker.add_dataset("10.9.9.9")
    vm, paths, errors = setup(flex_env, {"datasetUUID": dataset_id})
    assert errors == {}
    assert ("POST", f"/v1/configuration/datasets/{dataset_id}", {"primary": flocker.nodes[THIS_HOST]}) in flocker.requests
    assert flocker.state[dataset_id]["primary"] == flocker.nodes[THIS_HOST]
    assert mounts.is_mount_point(paths["db"])
    vm.teardown_pod("u1")


def test_sv7_errors_of_the_control_service_and_of_the_source(flex_env: FlexEnv, flocker: FlockerFake) -> None:
    """SV7: an unknown datasetUUID -> the control service's 404 in the error; both or neither of
    datasetName/datasetUUID -> refused; the fake refuses a body that is not JSON, as the service does."""
    vm, _paths, errors = setup(flex_env, {"datasetUUID": "6d0e0e3c-0000-4000-8000-000000000000"})
    assert "404 Dataset not found." in errors["db"]
    vm.teardown_pod("u1")
    vm, _paths, errors = setup(flex_env, {"datasetUUID": "x", "datasetName": "y"})
    assert "exactly one of datasetName and datasetUUID" in errors["db"]
    vm.teardown_pod("u1")
    response = httpx.post(f"{flocker.url}/v1/configuration/datasets", content=b"{not json")
    assert response.status_code == 400
