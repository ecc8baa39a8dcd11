"""A pod a workload controller writes to the store itself has the status the API server gives every new
pod (phase Pending), so it reads as Kubernetes' does before the scheduler and the agent write theirs."""
from __future__ import annotations

from storage.controllers.workloads import pod_from_template


def test_a_pod_made_from_a_template_is_pending_with_its_owner() -> None:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
             "metadata": {"name": "web-1", "namespace": "default", "uid": "u-1"}}
    template = {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    pod = pod_from_template(owner, template, "apps/v1", "ReplicaSet", "web-1-")
    assert pod["status"] == {"phase": "Pending"}
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert pod["spec"] == template["spec"] and pod["spec"] is not template["spec"]
