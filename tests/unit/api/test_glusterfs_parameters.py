"""The pure parts of kubernetes.io/glusterfs: volume types, GIDs, volume names, options, hosts (GF1, GF2, GF6, GF8)."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from provisioners.base import ProvisionRequest
from provisioners.glusterfs import _volume_options, allocate_gid, capacity_gib, parse_volume_type, volume_name_for
from provisioners.testing import make_claim
from storage.errors import PermanentError
from volume_plugins.glusterfs import endpoint_hosts, order_hosts


@pytest.mark.parametrize("value,expected", [
    ("", ("replicate", [3])), ("replicate:2", ("replicate", [2])), ("Replicate:1", ("replicate", [1])),
    ("none", ("none", [])), ("disperse:4:2", ("disperse", [4, 2])), ("disperse:2:1", ("disperse", [2, 1])),
])
def test_volume_types(value: str, expected: tuple[str, list[int]]) -> None:
    assert parse_volume_type(value) == expected


@pytest.mark.parametrize("value", ["replicate", "replicate:0", "replicate:a", "disperse:2:2", "disperse:4", "stripe:2",
                                   "none:1"])
def test_bad_volume_types_name_the_parameter(value: str) -> None:
    with pytest.raises(PermanentError, match="volumetype"):
        parse_volume_type(value)


@given(st.text(min_size=1, max_size=40), st.integers(2000, 100000), st.integers(0, 1000))
def test_gid_in_range_and_stable(name: str, low: int, width: int) -> None:
    gid = allocate_gid(name, low, low + width)
    assert low <= gid <= low + width
    assert allocate_gid(name, low, low + width) == gid


def test_volume_name_and_capacity() -> None:
    claim = make_claim(name="db", namespace="apps", uid="1234")
    req = ProvisionRequest(volume_name="pvc-1234", claim=claim, storage_class={"metadata": {"name": "c"}})
    assert volume_name_for(req, "") == "pvc-1234"
    assert volume_name_for(req, "dept") == "dept_apps_db_1234"
    assert capacity_gib(1) == 1 and capacity_gib(1024**3) == 1 and capacity_gib(1024**3 + 1) == 2


def test_volume_options() -> None:
    assert _volume_options("a.b 1, c.d on") == [("a.b", "1"), ("c.d", "on")]
    assert _volume_options("") == []
    with pytest.raises(PermanentError, match="volumeoptions"):
        _volume_options("lonely")


def test_hosts_from_endpoints_and_order() -> None:
    ep = {"subsets": [{"addresses": [{"ip": "10.0.0.2"}, {"hostname": "g1"}]}, {"addresses": [{"ip": "10.0.0.2"}]},
                      {"notReadyAddresses": [{"ip": "10.0.0.9"}]}]}
    assert endpoint_hosts(ep) == ["10.0.0.2", "g1"]
    assert endpoint_hosts({}) == []
    assert order_hosts(["a", "b", "c"], lambda h: h == "c") == ["c", "a", "b"]
