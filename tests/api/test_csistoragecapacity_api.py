"""storage.k8s.io/v1 CSIStorageCapacity through the API server (SEMANTICS SCAP1): Kubernetes'
ValidateCSIStorageCapacity in its words, immutable GetCapacity inputs, no generation."""
from __future__ import annotations

import httpx

from apiobjects import causes

CAPACITIES = "/apis/storage.k8s.io/v1/namespaces/default/csistoragecapacities"


def test_scap1_capacity_objects_are_validated_and_their_inputs_immutable(http: httpx.Client) -> None:
    body = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity", "metadata": {"name": "manual"},
            "storageClassName": "Not_A_Class", "capacity": "-1Gi", "nodeTopology": {"matchLabels": {"bad key!": "x"}}}
    got = causes(http.post(CAPACITIES, json=body))
    assert [c.split(":")[0] for c in got] == ["nodeTopology.matchLabels", "storageClassName", "capacity"], got
    assert got[2] == 'capacity: Invalid value: "-1Gi": must be greater than or equal to 0'
    body.update(storageClassName="gold", capacity="1Gi", nodeTopology={"matchLabels": {"zone": "a"}})
    made = http.post(CAPACITIES, json=body)
    assert made.status_code == 201, made.text
    assert "generation" not in made.json()["metadata"]
    grown = {**made.json(), "capacity": "2Gi", "maximumVolumeSize": "1Gi"}
    updated = http.put(f"{CAPACITIES}/manual", json=grown)
    assert updated.status_code == 200 and updated.json()["capacity"] == "2Gi", updated.text
    moved = {**updated.json(), "storageClassName": "silver", "nodeTopology": {"matchLabels": {"zone": "b"}}}
    assert causes(http.put(f"{CAPACITIES}/manual", json=moved)) == [
        'nodeTopology: Invalid value: {"matchLabels":{"zone":"b"}}: field is immutable',
        'storageClassName: Invalid value: "silver": field is immutable']
    assert http.delete(f"{CAPACITIES}/manual").status_code == 200
