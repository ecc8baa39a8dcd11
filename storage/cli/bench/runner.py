"""Running fio in pods on freshly provisioned claims, and on the node's pool for the baseline.

Everything a run creates carries the label ``stowage.io/bench-run=<run id>``; ``cleanup`` removes
exactly those objects and waits until they (and their volumes) are gone, whether the run ended,
failed or was interrupted (BN2).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

from storage.api.bench_figures import ANN_MEASURING
from storage.cli.bench import jobs as jobmod
from storage.cli.bench.stats import FioOutputError, parse_fio
from storage.cli.errors import CommandError
from storage.errors import NotFound, StowageError

log = structlog.get_logger(__name__)

RUN_LABEL = "stowage.io/bench-run"
MARK = "@@STOWAGE-BENCH"
DATA = "/data"
DEVICE = "/dev/stowage-bench"
START_DIR = "/etc/stowage-bench"
START_KEY = "startAt"
# Between the last pod's "ready" and the common start: room for the ConfigMap's change to reach every node.
START_LEAD = 5
# A pod's change is seen at once (a watch); the progress display reads the running pods' log tails this
# often (the API server and this loop share the node's CPUs with fio).
PROGRESS_INTERVAL = 2.0
# The watches behind the waits: reopened after this long (server side), or after a failure with back-off.
WATCH_SECONDS = 30
WATCH_RETRY_FIRST = 0.2
WATCH_RETRY_MAX = 5.0
HOSTNAME = "kubernetes.io/hostname"
Obj = dict[str, Any]


class BenchFailed(CommandError):
    """fio failed or a pod could not run: the run stops, its objects are cleaned up."""


@dataclass
class Plan:
    """What one run does on one storage class (BN1)."""
    storage_class: str
    size: str
    size_bytes: int
    volume_mode: str
    jobs: list[jobmod.Job]
    settings: jobmod.Settings
    namespace: str = "default"
    job_file: str | None = None  # contents of the user's fio job file
    existing_claim: str | None = None  # --claim: benchmark this claim; never created or deleted by us
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


@dataclass
class Target:
    node: str | None
    pod: str
    claim: str


def start_config_map(plan: Plan) -> str:
    """The ConfigMap through which the pods of a several-node run learn when to start (BN23)."""
    return f"stowage-bench-{plan.run_id}-start"


def _script(plan: Plan, together: bool) -> str:
    """The pod's shell: the jobs round-robin over the repeats (so drift hits every job alike), each
    fio run's JSON between markers in the log, a failing fio ends the pod with its message."""
    block = plan.volume_mode == "Block"
    target = DEVICE if block else f"{DATA}/stowage-bench/fio.dat"
    lines = ["set -u", "trap 'exit 143' TERM INT", "export LC_ALL=C",
             "mkdir -p /tmp/sb" if block else f"mkdir -p {DATA}/stowage-bench /tmp/sb && cd {DATA}/stowage-bench"]
    if block:
        # fio given a missing device path makes a regular file there (on the container's /dev tmpfs) and
        # measures memory: refuse to measure anything but the claim's device.
        lines.append(f"if [ ! -b {DEVICE} ]; then echo '{MARK} fail device 0'; echo '{DEVICE} is not a block device in the pod'; exit 3; fi")
    if plan.job_file is not None:
        lines.append("cat > /tmp/sb/job.fio <<'STOWAGE_BENCH_JOB_EOF'\n" + plan.job_file.rstrip("\n")
                     + "\nSTOWAGE_BENCH_JOB_EOF")
        runs = [("custom", jobmod.job_file_argv(plan.settings, "/tmp/sb/job.fio"))]
        after: dict[str, str] = {}
    else:
        runs = [(j.name, jobmod.fio_argv(j, plan.settings, jobmod.target_for(j, target, block))) for j in plan.jobs]
        # BN31: the fdatasync job's own file goes after each run, so every repeat writes a new one.
        after = {j.name: f"rm -f {jobmod.target_for(j, target, block)}" for j in plan.jobs if jobmod.fresh_each_run(j, block)}
        # BN30: the test file written in full before the first measured job, whichever jobs run.
        if any(jobmod.target_for(j, target, block) == target for j in plan.jobs):
            lines.append(f"echo '{MARK} begin prefill 0'")
            lines.append(f"{jobmod.shell(jobmod.prefill_argv(plan.settings, target))} --output=/tmp/sb/out.json >/tmp/sb/err 2>&1; rc=$?")
            lines.append(f"if [ $rc -ne 0 ]; then echo '{MARK} fail prefill 0'; cat /tmp/sb/err; exit 3; fi")
    if together:
        # BN23: after its own preparation (prefill times differ between nodes), each pod says it is ready
        # and waits for the start time the runner writes into the mounted ConfigMap once all are.
        lines.append(f"echo '{MARK} ready'")
        lines.append(f"while [ ! -s {START_DIR}/{START_KEY} ]; do sleep 0.2; done")
        lines.append(f'at=$(cat {START_DIR}/{START_KEY}); while [ "$(date +%s)" -lt "$at" ]; do sleep 0.05; done')
    env = f"FILENAME={target} " if plan.job_file is not None else ""
    for rep in range(1, plan.settings.repeats + 1):
        for name, argv in runs:
            lines.append(f"echo '{MARK} begin {name} {rep}'")
            lines.append(f"{env}{jobmod.shell(argv)} --output=/tmp/sb/out.json >/tmp/sb/err 2>&1; rc=$?")
            if name in after:
                lines.append(after[name])
            lines.append(f"if [ $rc -ne 0 ]; then echo '{MARK} fail {name} {rep}'; cat /tmp/sb/err; exit 3; fi")
            lines.append(f"echo '{MARK} json {name} {rep}'; cat /tmp/sb/out.json; echo; echo '{MARK} end {name} {rep}'")
    if not block:
        lines.append(f"rm -rf {DATA}/stowage-bench")
    lines.append(f"echo '{MARK} done'")
    return "\n".join(lines) + "\n"


def _labels(plan: Plan) -> dict[str, str]:
    return {RUN_LABEL: plan.run_id, "app.kubernetes.io/name": "stowage-bench"}


def start_object(plan: Plan) -> Obj:
    """The start signal's ConfigMap, empty until every pod is ready (BN23)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": start_config_map(plan), "namespace": plan.namespace, "labels": _labels(plan)}}


def objects(plan: Plan, target: Target, together: bool) -> tuple[Obj, Obj]:
    labels = _labels(plan)
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": target.claim, "namespace": plan.namespace, "labels": labels},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": plan.storage_class,
                      "volumeMode": plan.volume_mode, "resources": {"requests": {"storage": plan.size}}}}
    container: Obj = {"name": "fio", "image": "debian:12", "command": ["/bin/sh", "-c", _script(plan, together)]}
    mounts: list[Obj] = []
    if plan.volume_mode == "Block":
        container["volumeDevices"] = [{"name": "data", "devicePath": DEVICE}]
    else:
        mounts.append({"name": "data", "mountPath": DATA})
    volumes: list[Obj] = [{"name": "data", "persistentVolumeClaim": {"claimName": target.claim}}]
    if together:
        volumes.append({"name": "start", "configMap": {"name": start_config_map(plan)}})
        mounts.append({"name": "start", "mountPath": START_DIR, "readOnly": True})
    if mounts:
        container["volumeMounts"] = mounts
    spec: Obj = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": [container],
                 "volumes": volumes}
    if target.node:
        spec["nodeSelector"] = {HOSTNAME: target.node}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": target.pod, "namespace": plan.namespace, "labels": labels,
                        "annotations": {ANN_MEASURING: "true"}}, "spec": spec}
    return claim, pod


def parse_log(text: str) -> dict[str, list[Obj]]:
    """The pod log's fio reports, parsed, by job name (in repeat order); BenchFailed with fio's
    message when a job failed."""
    out: dict[str, list[Obj]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(f"{MARK} fail "):
            _, _, name, rep = line.split()[:4]
            raise BenchFailed(f"fio job {name} (repeat {rep}) failed: " + " ".join(lines[i + 1:i + 12]).strip()[:800])
        if line.startswith(f"{MARK} json "):
            name = line.split()[2]
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(f"{MARK} end "))
            raw = "\n".join(lines[i + 1:end])
            # fio may print notes before its JSON even with --output (old kernels, missing io_uring).
            start = raw.find("{")
            try:
                report = json.loads(raw[start:])
            except ValueError as exc:
                raise BenchFailed(f"fio job {name}: its output is not JSON ({exc})") from None
            out.setdefault(name, []).append(report)
            i = end
        i += 1
    return out


def progress_of(text: str, order: list[str] | None = None) -> tuple[int, str]:
    """How many fio runs have finished, and what runs now, from the log so far. With the jobs' ``order``
    the last marker alone tells it, so only the log's tail needs to be read."""
    marks = re.findall(rf"{MARK} (begin|end) (\S+) (\d+)", text)
    current = f"{marks[-1][1]} #{marks[-1][2]}" if marks else "starting"
    if text.rstrip().endswith(f"{MARK} ready"):
        current = "waiting for the other nodes"
    if order is not None and marks and marks[-1][1] in order:
        kind, name, rep = marks[-1]
        done = (int(rep) - 1) * len(order) + order.index(name) + (kind == "end")
    else:
        done = text.count(f"{MARK} end ")
    if f"{MARK} done" in text:
        current = "done"
    return done, current


class _Changes:
    """A watch in a thread of its own that sets ``event`` on every change of the watched objects (and
    whenever the watch is opened again, when something may have changed unseen), so a waiting loop looks
    again when there is something to see instead of every so often (BN35). The loop decides by reading:
    an event only says "look now"."""

    def __init__(self, client: Any, resource: str, namespace: str | None, *,
                 label_selector: str | None = None, field_selector: str | None = None) -> None:
        self.event = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(client, resource, namespace, label_selector, field_selector),
            name=f"bench-watch-{resource}", daemon=True)

    def __enter__(self) -> "_Changes":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # The thread ends at its stream's next event or server-side timeout; it holds no lock and no state.
        self._stop.set()

    def wait(self, timeout: float) -> None:
        """Until the next change, at most ``timeout`` seconds; then the next change is waited for anew."""
        self.event.wait(max(0.0, timeout))
        self.event.clear()

    def _run(self, client: Any, resource: str, namespace: str | None, label_selector: str | None,
             field_selector: str | None) -> None:
        delay = WATCH_RETRY_FIRST
        while not self._stop.is_set():
            try:
                for _ in client.watch(resource, namespace, label_selector=label_selector,
                                      field_selector=field_selector, timeout=WATCH_SECONDS):
                    self.event.set()
                    delay = WATCH_RETRY_FIRST
                    if self._stop.is_set():
                        return
            except (StowageError, httpx.HTTPError) as exc:  # cut, expired or refused: open it again
                log.debug("bench.watch_reopened", resource=resource, error=str(exc))
            self.event.set()
            if self._stop.wait(delay):  # a server that just went away is not hammered
                return
            delay = min(WATCH_RETRY_MAX, delay * 2)


def _log_text(client: Any, name: str, namespace: str, tail: int | None = None) -> str:
    try:
        return b"".join(client.logs(name, namespace, tail_lines=tail)).decode(errors="replace")
    except (StowageError, httpx.HTTPError):  # not started yet: no log
        return ""


class Runner:
    """Runs one plan on its targets; ``cleanup`` is safe to call at any time, more than once."""

    def __init__(self, client: Any, plan: Plan, targets: list[Target],
                 on_progress: Callable[[str, int, int, str], None] | None = None,
                 timeout: float = 3600.0) -> None:
        self.client, self.plan, self.targets = client, plan, targets
        self.on_progress = on_progress or (lambda *_: None)
        self.timeout = timeout
        self.created: list[tuple[str, str]] = []
        self.together = False
        self.started_at: int | None = None  # the common start written for the pods (BN23)

    @property
    def order(self) -> list[str]:
        return ["custom"] if self.plan.job_file is not None else [j.name for j in self.plan.jobs]

    @property
    def runs_per_pod(self) -> int:
        return (1 if self.plan.job_file is not None else len(self.plan.jobs)) * self.plan.settings.repeats

    def start(self, together: bool = False) -> None:
        """Create the claims and pods; ``together`` (several nodes) holds every pod's first job until
        all are ready (BN23)."""
        self.together = together
        if together:
            self.created.append(("configmaps", start_config_map(self.plan)))
            self.client.create(start_object(self.plan))
        for target in self.targets:
            claim, pod = objects(self.plan, target, together)
            if self.plan.existing_claim is None:
                self.created.append(("persistentvolumeclaims", target.claim))
                self.client.create(claim)
            self.created.append(("pods", target.pod))
            self.client.create(pod)

    def wait(self) -> dict[str, tuple[dict[str, list[Obj]], Obj]]:
        """Each target's (fio reports by job, facts about its volume), once every pod has finished."""
        ns = self.plan.namespace
        deadline = time.monotonic() + self.timeout
        finished: dict[str, tuple[dict[str, list[Obj]], Obj]] = {}
        total = self.runs_per_pod
        ready: set[str] = set()
        with _Changes(self.client, "pods", ns, label_selector=f"{RUN_LABEL}={self.plan.run_id}") as changes:
            while len(finished) < len(self.targets):
                if time.monotonic() > deadline:
                    raise BenchFailed(f"the benchmark did not finish within {self.timeout:.0f}s")
                self._look(finished, ready, total)
                if len(finished) < len(self.targets):
                    changes.wait(min(PROGRESS_INTERVAL, deadline - time.monotonic()))
        return finished

    def _look(self, finished: dict[str, tuple[dict[str, list[Obj]], Obj]], ready: set[str], total: int) -> None:
        """One look at every pod not finished yet: collect the finished ones, show the others' progress."""
        ns = self.plan.namespace
        if self.together and self.started_at is None and len(ready) == len(self.targets):
            self.release()
        for t in self.targets:
            if t.pod in finished:
                continue
            pod = self.client.get("pods", t.pod, ns)
            phase = (pod.get("status") or {}).get("phase")
            node = (pod.get("spec") or {}).get("nodeName") or t.node or "?"
            if phase in ("Succeeded", "Failed"):
                text = _log_text(self.client, t.pod, ns)
                reports = parse_log(text)  # raises with fio's message when a job failed
                if phase == "Failed" or f"{MARK} done" not in text:
                    raise BenchFailed(f"pod {t.pod} on {node} failed: {_reason(pod)}; log tail: {text[-600:]!r}")
                finished[t.pod] = (reports, self.volume_facts(t, node))
                self.on_progress(node, total, total, "done")
            elif phase == "Running":
                # The tail only: the API server and this loop share the node's CPUs with fio.
                text = _log_text(self.client, t.pod, ns, tail=3)
                if f"{MARK} ready" in text:
                    ready.add(t.pod)
                done, current = progress_of(text, self.order)
                self.on_progress(node, done, total, current)
            else:
                self.on_progress(node, 0, total, _waiting_reason(pod, self.client, t.claim, ns))

    def release(self) -> None:
        """BN23: every pod is prepared; they all start their first job at the same second, a little
        later, so the change reaches every node first."""
        start = int(time.time()) + START_LEAD
        self.client.patch("configmaps", start_config_map(self.plan), {"data": {START_KEY: str(start)}},
                          self.plan.namespace)
        self.started_at = start

    def volume_facts(self, target: Target, node: str) -> Obj:
        """BN15-BN16: what the claim's volume is, checked while it still exists."""
        facts: Obj = {"node": node, "pv": None, "local_path": None, "loop_devices": {}}
        try:
            claim = self.client.get("persistentvolumeclaims", target.claim, self.plan.namespace)
            pv_name = (claim.get("spec") or {}).get("volumeName")
            if pv_name:
                pv = self.client.get("persistentvolumes", pv_name)
                facts["pv"] = pv_name
                local = (pv.get("spec") or {}).get("local") or {}
                facts["local_path"] = local.get("path")
        except NotFound:
            return facts
        path = facts["local_path"]
        if path and os.path.exists(path) and shutil.which("losetup"):
            out = subprocess.run(["losetup", "-j", path, "-O", "NAME,DIO", "-n"], capture_output=True, text=True, check=False)
            for row in out.stdout.splitlines():
                parts = row.split()
                if len(parts) == 2:
                    facts["loop_devices"][os.path.basename(parts[0])] = parts[1] == "1"
        return facts

    def cleanup(self, timeout: float = 180.0) -> list[str]:
        """Delete what this run created (found by its label, so objects made by an interrupted create
        are found too) and wait until pods, claims and their volumes are gone. Problems, if any."""
        return cleanup_run(self.client, self.plan.run_id, self.plan.namespace, timeout)


def cleanup_run(client: Any, run_id: str | None, namespace: str, timeout: float = 180.0) -> list[str]:
    selector = f"{RUN_LABEL}={run_id}" if run_id else RUN_LABEL
    problems: list[str] = []
    pods, _ = client.list("pods", namespace, label_selector=selector)
    claims, _ = client.list("persistentvolumeclaims", namespace, label_selector=selector)
    for cm in client.list("configmaps", namespace, label_selector=selector)[0]:
        _delete(client, "configmaps", cm["metadata"]["name"], namespace)
    volumes = {(c.get("spec") or {}).get("volumeName") for c in claims} - {None}
    for p in pods:
        _delete(client, "pods", p["metadata"]["name"], namespace)
    deadline = time.monotonic() + timeout
    if not _gone(client, "pods", namespace, deadline, label_selector=selector):
        problems.append("benchmark pods still present")
    for c in claims:
        _delete(client, "persistentvolumeclaims", c["metadata"]["name"], namespace)
    if not _gone(client, "persistentvolumeclaims", namespace, deadline, label_selector=selector):
        problems.append("benchmark claims still present")
    for name in sorted(volumes):
        if not _gone(client, "persistentvolumes", None, deadline, field_selector=f"metadata.name={name}"):
            problems.append(f"volume {name} still present")
    return problems


def _gone(client: Any, resource: str, namespace: str | None, deadline: float, *,
          label_selector: str | None = None, field_selector: str | None = None) -> bool:
    """Until no object matches (True) or ``deadline`` passes (False): a list after each change a watch
    reports (BN35), not a list every half second."""
    def remaining() -> list[Obj]:
        items, _ = client.list(resource, namespace, label_selector=label_selector, field_selector=field_selector)
        return items

    if not remaining():
        return True
    with _Changes(client, resource, namespace, label_selector=label_selector, field_selector=field_selector) as changes:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return not remaining()
            changes.wait(left)
            if not remaining():
                return True


def _delete(client: Any, kind: str, name: str, namespace: str) -> None:
    try:
        client.delete(kind, name, namespace)
    except NotFound:
        pass


def _reason(pod: Obj) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or {}
        if term:
            return f"exit code {term.get('exitCode')} ({term.get('reason', '')})"
    return (pod.get("status") or {}).get("reason") or (pod.get("status") or {}).get("message") or "unknown"


def _waiting_reason(pod: Obj, client: Any, claim: str, ns: str) -> str:
    try:
        phase = ((client.get("persistentvolumeclaims", claim, ns).get("status") or {}).get("phase")) or "Pending"
    except NotFound:
        phase = "?"
    return f"claim {phase}, pod {(pod.get('status') or {}).get('phase') or 'Pending'}"


# ---- the baseline: the same jobs on the node's pool, run on this host ---------------------------

def pool_path(node: Obj) -> str | None:
    pools = (node.get("status") or {}).get("storagePools") or []
    return pools[0].get("path") if pools else None


def run_baseline(plan: Plan, directory: str, on_progress: Callable[[int, int, str], None] | None = None) -> dict[str, list[Obj]]:
    """BN13: fio on the pool's own filesystem, the same jobs, settings and repeat order as the pod's,
    in a scratch directory removed afterwards."""
    if not os.path.isdir(directory):
        raise CommandError(f"--baseline: the node's pool {directory} is not on this host; run the "
                           "benchmark from the node (or without --baseline)")
    scratch = tempfile.mkdtemp(prefix=".stowage-bench-baseline-", dir=directory)
    out: dict[str, list[Obj]] = {}
    try:
        target = os.path.join(scratch, "fio.dat")
        if plan.job_file is not None:
            job = os.path.join(scratch, "job.fio")
            Path(job).write_text(plan.job_file)
            runs = [("custom", jobmod.job_file_argv(plan.settings, job))]
        else:
            runs = [(j.name, jobmod.fio_argv(j, plan.settings, jobmod.target_for(j, target))) for j in plan.jobs]
            # BN30, BN31: prepared as in the pod, so volume ÷ baseline compares like with like.
            if any(jobmod.target_for(j, target) == target for j in plan.jobs):
                if on_progress:
                    on_progress(0, len(runs) * plan.settings.repeats, "prefill")
                pre = subprocess.run(jobmod.prefill_argv(plan.settings, target), capture_output=True, text=True,
                                     cwd=scratch, check=False)
                if pre.returncode != 0:
                    raise BenchFailed(f"baseline prefill failed: {(pre.stderr or pre.stdout)[-600:]}")
        fresh = {j.name: jobmod.target_for(j, target) for j in plan.jobs if jobmod.fresh_each_run(j)} \
            if plan.job_file is None else {}
        total, done = len(runs) * plan.settings.repeats, 0
        for _ in range(plan.settings.repeats):
            for name, argv in runs:
                if on_progress:
                    on_progress(done, total, name)
                proc = subprocess.run(argv, capture_output=True, text=True, cwd=scratch,
                                      env={**os.environ, "FILENAME": target, "LC_ALL": "C"}, check=False)
                if name in fresh and os.path.exists(fresh[name]):
                    os.remove(fresh[name])
                if proc.returncode != 0:
                    raise BenchFailed(f"baseline fio job {name} failed: {(proc.stderr or proc.stdout)[-600:]}")
                out.setdefault(name, []).append(json.loads(proc.stdout[proc.stdout.find("{"):]))
                done += 1
        if on_progress:
            on_progress(total, total, "done")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def parse_reports(reports: dict[str, list[Obj]]) -> dict[str, list[Obj]]:
    parsed: dict[str, list[Obj]] = {}
    for name, runs in reports.items():
        try:
            parsed[name] = [parse_fio(r) for r in runs]
        except FioOutputError as exc:
            raise BenchFailed(str(exc)) from None
    return parsed
