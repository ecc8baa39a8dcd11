"""CT3: through the real agent, a crash-looping container's every start is a ``Pulled``, ``Created`` and
``Started`` event, repeats counted up on one event each (the event correlator's rules), however the status
writes fall between the starts."""
from __future__ import annotations

import pytest

from agent_cluster import Cluster, pod, wait_until

pytestmark = pytest.mark.root

# Fails four times (a run is counted on the emptyDir, which outlives the runs), then succeeds: five runs.
FLAKY = "n=$(cat /s/n 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /s/n; [ $n -ge 5 ] || exit 1"


def test_ct3_every_start_of_a_crash_looping_container_is_counted_on_its_events(cluster: Cluster) -> None:
    cluster.start_controllers()
    cluster.add_agent("n1")
    cluster.apply(pod("loop", FLAKY, restartPolicy="OnFailure", volumes=[{"name": "s", "emptyDir": {}}],
                      mounts_=[{"name": "s", "mountPath": "/s"}]))
    done = cluster.wait_pod("loop", lambda p: (p.get("status") or {}).get("phase") == "Succeeded", "Succeeded", 180)
    assert done["status"]["containerStatuses"][0]["restartCount"] == 4

    def counts() -> dict[tuple[str, str], int]:
        return {(e["reason"], e["message"]): int(e.get("count") or 1) for e in cluster.events_for("loop")
                if e.get("type") == "Normal" and e["reason"] in ("Pulled", "Created", "Started")}

    expected = {("Pulled", 'Container image "debian:12" already present on machine'): 5,
                ("Created", "Created container: main"): 5, ("Started", "Started container main"): 5}
    wait_until(lambda: counts() == expected, "five of each start event", timeout=30,
               diagnose=lambda: str(counts()))
    # One event object each: repeats are counted, not written again.
    names = [e["metadata"]["name"] for e in cluster.events_for("loop") if e["reason"] in ("Pulled", "Created", "Started")]
    assert len(names) == 3, names
    assert all(e["involvedObject"].get("fieldPath") == "spec.containers{main}"
               for e in cluster.events_for("loop") if e["reason"] in ("Pulled", "Created", "Started"))
