"""Generic ephemeral volumes (docs/semantics.md EV1-EV4), with a real agent, real loop devices and runc:
the Kubernetes documentation's pod with an ``ephemeral`` volume gets its claim ``<pod>-<volume>``
from the template, controlled by the pod, and runs on the provisioned volume; the claim and its
volume go with the pod; a claim of that name the pod does not control is never used."""
from __future__ import annotations

from agent_cluster import Cluster, claim, local_class, pod, wait_until

Obj = dict


def _ephemeral_pod(name: str, script: str, storage_class: str) -> Obj:
    template = {"metadata": {"labels": {"type": "scratch"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": storage_class,
                         "resources": {"requests": {"storage": "64Mi"}}}}
    return pod(name, script, volumes=[{"name": "scratch", "ephemeral": {"volumeClaimTemplate": template}}],
               mounts_=[{"name": "scratch", "mountPath": "/scratch"}])


def test_ev1_ephemeral_volume_claim_is_made_owned_used_and_removed_with_the_pod(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(local_class("eph"),
                  _ephemeral_pod("my-app", "echo hello > /scratch/f; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done", "eph"))
    running = cluster.wait_running("my-app")
    c = cluster.client.get("persistentvolumeclaims", "my-app-scratch", "default")
    assert c["status"]["phase"] == "Bound" and c["metadata"]["labels"] == {"type": "scratch"}
    owner = c["metadata"]["ownerReferences"]
    assert owner == [{"apiVersion": "v1", "kind": "Pod", "name": "my-app", "uid": running["metadata"]["uid"],
                      "controller": True, "blockOwnerDeletion": True}]
    mount = next((cluster.agent_dir("n1") / "pods" / running["metadata"]["uid"] / "volumes").glob("*/scratch"))
    wait_until(lambda: (mount / "f").exists() and (mount / "f").read_text() == "hello\n", "the pod's write on its volume")
    volume_name = c["spec"]["volumeName"]
    cluster.client.delete("pods", "my-app", "default")
    cluster.wait_gone("pods", "my-app", "default")
    cluster.wait_gone("persistentvolumeclaims", "my-app-scratch", "default")
    cluster.wait_gone("persistentvolumes", volume_name)  # the class's Delete policy


def test_ev2_a_claim_of_that_name_the_pod_does_not_control_is_not_used(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(local_class("eph2"), claim("other-scratch", "64Mi", "eph2"))
    cluster.apply(_ephemeral_pod("other", "sleep 1000", "eph2"))
    message = 'PVC default/other-scratch was not created for the pod'

    def refused() -> Obj | None:
        p = cluster.client.get("pods", "other", "default")
        conditions = (p.get("status") or {}).get("conditions") or []
        return p if any(message in (c.get("message") or "") for c in conditions) else None

    p = wait_until(refused, "the pod to be unschedulable naming the foreign claim")
    assert not (p.get("spec") or {}).get("nodeName")
    assert cluster.client.get("persistentvolumeclaims", "other-scratch", "default")["metadata"].get("ownerReferences") is None
