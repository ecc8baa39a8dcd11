"""SEMANTICS LH1-LH2 with the real kubectl on a real agent: Kubernetes' documented lifecycle example
(kubernetes/website content/en/examples/pods/lifecycle-events.yaml, its postStart hook verbatim; the container
gets a command, as images are names only here) writes its message before the pod is Running, and a postStart
hook that fails shows as the kubelet's FailedPostStartHook event in kubectl describe, without what it printed
(LH5)."""
from __future__ import annotations

from agent_cluster import Cluster, wait_until
from test_sidecar_kubectl import kubectl

LIFECYCLE_DEMO = """\
apiVersion: v1
kind: Pod
metadata:
  name: lifecycle-demo
spec:
  containers:
  - name: lifecycle-demo-container
    image: nginx
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    lifecycle:
      postStart:
        exec:
          command: ["/bin/sh", "-c", "echo Hello from the postStart handler > /usr/share/message"]
      preStop:
        exec:
          command: ["/bin/sh", "-c", "rm -f /usr/share/message"]
"""

FAILING = """\
apiVersion: v1
kind: Pod
metadata:
  name: hook-fails
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "echo no database >&2; exit 1"]
"""


def test_lh1_lh2_the_documented_post_start_hook_and_a_failing_one(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    kubeconfig = cluster.server.kubeconfig
    assert kubeconfig is not None
    kubectl(kubeconfig, "apply", "-f", "-", input=LIFECYCLE_DEMO + "---\n" + FAILING)
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "pod/lifecycle-demo", "--timeout=150s")
    # Running only after the hook: the message is there at once.
    assert kubectl(kubeconfig, "exec", "lifecycle-demo", "--", "cat", "/usr/share/message") == (
        "Hello from the postStart handler\n")

    # LH5: the event says only that the hook failed; what the hook wrote to stderr is in no event.
    wait_until(lambda: "PostStartHook failed" in kubectl(kubeconfig, "describe", "pod", "hook-fails"),
               "the FailedPostStartHook event in kubectl describe", 120)
    described = kubectl(kubeconfig, "describe", "pod", "hook-fails")
    assert "FailedPostStartHook" in described and "no database" not in described
    events = kubectl(kubeconfig, "get", "events", "--field-selector", "reason=Killing,involvedObject.name=hook-fails",
                     "-o", "jsonpath={.items[*].message}")
    assert "FailedPostStartHook" in events.split()
    assert "no database" not in kubectl(kubeconfig, "get", "events", "-o", "yaml")
    # Restarted as restartPolicy Always says, its hook failing again each time.
    wait_until(lambda: int(kubectl(kubeconfig, "get", "pod", "hook-fails", "-o",
                                   "jsonpath={.status.containerStatuses[0].restartCount}") or 0) >= 1,
               "a restart after the failed hook", 120)
    kubectl(kubeconfig, "delete", "pod", "lifecycle-demo", "hook-fails", "--timeout=120s")
