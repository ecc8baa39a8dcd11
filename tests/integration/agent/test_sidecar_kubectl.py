"""Kubernetes' own sidecar examples (kubernetes/website content/en/examples/application/deployment-sidecar.yaml
and application/job/job-sidecar.yaml, verbatim) applied with the real kubectl on a real agent (SEMANTICS
SD2-SD4): the Deployment's pod runs and is Ready with its sidecar beside the main container, and the Job
completes once its main container is done and its sidecar stopped."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from agent_cluster import Cluster, condition, wait_until
from support import kubectl_binary

DEPLOYMENT_SIDECAR = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: myapp
  labels:
    app.kubernetes.io/name: myapp
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: myapp
  template:
    metadata:
      labels:
        app.kubernetes.io/name: myapp
    spec:
      containers:
        - name: myapp
          image: alpine:latest
          command: ['sh', '-c', 'while true; do echo "logging" >> /opt/logs.txt; sleep 1; done']
          volumeMounts:
            - name: data
              mountPath: /opt
      initContainers:
        - name: logshipper
          image: alpine:latest
          # Setting restartPolicy: Always makes this a sidecar container.
          restartPolicy: Always
          command: ['sh', '-c', 'tail -F /opt/logs.txt']
          volumeMounts:
            - name: data
              mountPath: /opt
      volumes:
        - name: data
          emptyDir: {}
"""

JOB_SIDECAR = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: myjob
spec:
  template:
    spec:
      containers:
        - name: myjob
          image: alpine:latest
          command: ['sh', '-c', 'echo "logging" > /opt/logs.txt']
          volumeMounts:
            - name: data
              mountPath: /opt
      initContainers:
        - name: logshipper
          image: alpine:latest
          # Setting restartPolicy: Always makes this a sidecar container.
          restartPolicy: Always
          command: ['sh', '-c', 'tail -F /opt/logs.txt']
          volumeMounts:
            - name: data
              mountPath: /opt
      restartPolicy: Never
      volumes:
        - name: data
          emptyDir: {}
"""


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, timeout: float = 180) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    env["KUBECONFIG"] = str(kubeconfig)
    done = subprocess.run([kubectl_binary(), *args], input=input, capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_sd2_sd4_kubernetes_sidecar_examples_run_and_the_job_completes(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    kubeconfig = cluster.server.kubeconfig
    assert kubeconfig is not None
    kubectl(kubeconfig, "apply", "-f", "-", input=DEPLOYMENT_SIDECAR + "---\n" + JOB_SIDECAR)

    # The Deployment: Running and Ready, the sidecar running beside the main container and shipping its log.
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "pod", "-l", "app.kubernetes.io/name=myapp", "--timeout=150s")
    pods, _ = cluster.client.list("pods", "default", label_selector="app.kubernetes.io/name=myapp")
    (pod,) = pods
    status = pod["status"]
    assert status["phase"] == "Running" and condition(pod, "Initialized") == "True"
    (shipper,) = status["initContainerStatuses"]
    assert shipper["name"] == "logshipper" and "running" in shipper["state"]
    assert shipper["started"] is True and shipper["ready"] is True
    assert "running" in status["containerStatuses"][0]["state"]
    name = pod["metadata"]["name"]
    wait_until(lambda: "logging" in kubectl(kubeconfig, "logs", name, "-c", "logshipper"), "the sidecar's shipped log")

    # The Job: its main container writes once and exits 0; the sidecar (tail as PID 1, which ignores SIGTERM as
    # it does on Kubernetes) is stopped at the end of the 30 s grace period, and the Job completes.
    kubectl(kubeconfig, "wait", "--for=condition=complete", "job/myjob", "--timeout=150s")
    job_pods, _ = cluster.client.list("pods", "default", label_selector="job-name=myjob")
    (job_pod,) = job_pods
    assert job_pod["status"]["phase"] == "Succeeded"
    assert "terminated" in job_pod["status"]["initContainerStatuses"][0]["state"]
    assert job_pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
