"""Back-off everywhere (issue 8 item 8): a pod whose volume cannot be set up is retried per pod
with exponential back-off and jitter, one log line and one Event update per attempt, the Event
aggregated into one object with a count; a change of the pod retries at once. Counts and the
recorded attempt times are asserted, never wall speed."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "agent"))

from agent_cluster import Cluster, cluster, pod, tmp_base, wait_until  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.root

ATTEMPTS = 5  # 0.5 + 1 + 2 + 4 s of back-off (plus jitter) between the first and the fifth


def test_unsupported_volume_backs_off_exponentially_with_one_aggregated_event(cluster: Cluster) -> None:
    cluster.start_controllers()  # the namespace's default ServiceAccount, which every pod's token needs
    agent = cluster.add_agent("n1")
    bad = pod("nfs-less", volumes=[{"name": "remote", "cinder": {"volumeID": "vol-1"}}],
              mounts_=[{"name": "remote", "mountPath": "/remote"}], nodeName="n1")
    with capture_logs() as logs:
        began = time.monotonic()
        uid = cluster.apply(bad)[0]["metadata"]["uid"]
        wait_until(lambda: len(agent.volume_backoff.attempts(uid)) >= ATTEMPTS, f"{ATTEMPTS} attempts", timeout=60)
        elapsed = time.monotonic() - began
        attempts = agent.volume_backoff.attempts(uid)
        events = wait_until(lambda: (lambda evs: evs if evs and evs[0].get("count", 0) >= ATTEMPTS - 1 else None)(
            [e for e in cluster.events_for("nfs-less") if e.get("reason") == "FailedMount"]), "the event's count")
        backoff_lines = [e for e in logs if e.get("event") == "agent.pod_backoff" and e.get("pod") == "default/nfs-less"]
        setup_lines = [e for e in logs if e.get("event") == "volume.setup_failed" and e.get("pod") == "default/nfs-less"]
        warnings = [e for e in logs if e.get("log_level") in ("warning", "error")]

    # Exponential spacing: each delay about doubles (jitter stretches one by at most 20%), and no
    # attempt came before the previous one's back-off was over.
    delays = [a.delay for a in attempts]
    assert delays[0] >= 0.5
    for before, after in zip(delays, delays[1:]):
        assert after >= 1.6 * before, delays
    for previous, nxt in zip(attempts, attempts[1:]):
        assert nxt.at - previous.at >= previous.delay, "an attempt ran before its back-off ended"
    # Bounded: over the window, at most the attempts a doubling from 0.5 s allows (plus the first).
    assert len(attempts) <= 2 + math.ceil(math.log2(elapsed / 0.5 + 1)), (len(attempts), elapsed)
    # One Event object, its count bumped per attempt, not an object per attempt.
    assert len(events) == 1, [e["metadata"]["name"] for e in events]
    assert ATTEMPTS - 1 <= events[0]["count"] <= len(attempts) + 1
    assert 'volume type "cinder" is not supported by Stowage' in events[0]["message"]
    assert events[0]["lastTimestamp"] >= events[0]["firstTimestamp"]
    # Logs: one line per back-off step (and one per failing volume per attempt), not a flood.
    assert len(attempts) - 1 <= len(backoff_lines) <= len(attempts) + 1, len(backoff_lines)
    assert len(setup_lines) <= 2 * len(attempts) + 2, len(setup_lines)
    assert len(warnings) <= 3 * len(attempts) + 3, [e.get("event") for e in warnings]
    status = cluster.pod("nfs-less")["status"]["containerStatuses"][0]["state"]["waiting"]
    assert status["reason"] == "ContainerCreating" and "MountVolume.SetUp failed" in status["message"]

    # A change of the pod is tried at once, not after the (now several seconds long) back-off.
    last = agent.volume_backoff.attempts(uid)[-1]
    fresh = cluster.pod("nfs-less")
    fresh["metadata"].setdefault("annotations", {})["touched"] = "yes"
    cluster.client.update(fresh)
    retried = wait_until(lambda: (lambda a: a if len(a) > len(attempts) and a[-1].at > last.at else None)(
        agent.volume_backoff.attempts(uid)), "the retry after the change")
    assert retried[-1].at < last.at + last.delay, "the change waited for the back-off"


def test_a_created_configmap_ends_the_back_off_at_once(cluster: Cluster) -> None:
    cluster.start_controllers()  # the namespace's default ServiceAccount, which every pod's token needs
    agent = cluster.add_agent("n1")
    waiting = pod("needs-config", "cat /config/greeting; trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done",
                  volumes=[{"name": "config", "configMap": {"name": "later"}}],
                  mounts_=[{"name": "config", "mountPath": "/config"}], nodeName="n1")
    uid = cluster.apply(waiting)[0]["metadata"]["uid"]
    # Far enough into the back-off that its next timer is seconds away.
    wait_until(lambda: len(agent.volume_backoff.attempts(uid)) >= 5, "5 attempts", timeout=60)
    last = agent.volume_backoff.attempts(uid)[-1]
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later", "namespace": "default"},
                   "data": {"greeting": "hello"}})
    cluster.wait_running("needs-config")
    assert time.monotonic() < last.at + last.delay, "the pod waited for its back-off instead of the ConfigMap"
    assert agent.volume_backoff.attempts(uid) == [], "success resets the back-off"
