"""Two binder processes on one store (issue 3, item 2): thousands of claims and volumes
created while both run; at the end no volume serves two claims, every bind is complete
in both directions, and no claim that could be satisfied is left Pending."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter

import pytest

from storage.controllers.binder_index import find_best_volume_linear
from storage.store import open_store

from support import wait_for

PV, PVC = "persistentvolumes", "persistentvolumeclaims"
N = int(os.environ.get("STOWAGE_BINDER_CONCURRENCY_N", "1000"))
MODES = [["ReadWriteOnce"], ["ReadWriteMany"], ["ReadWriteOnce", "ReadOnlyMany"], ["ReadWriteOnce", "ReadWriteMany"]]
SIZES = ["1Gi", "2Gi", "3Gi", "5Gi", "500Mi"]


def _problems(store) -> list[str]:
    claims, _ = store.list(PVC)
    volumes, _ = store.list(PV)
    by_name = {v["metadata"]["name"]: v for v in volumes}
    problems: list[str] = []
    users = Counter(c["spec"].get("volumeName") for c in claims if c["spec"].get("volumeName"))
    problems += [f"volume {v} named by {n} claims" for v, n in users.items() if n > 1]
    for c in claims:
        name = c["metadata"]["name"]
        vn = c["spec"].get("volumeName")
        phase = (c.get("status") or {}).get("phase")
        if vn:
            v = by_name.get(vn)
            if v is None or (v["spec"].get("claimRef") or {}).get("uid") != c["metadata"]["uid"]:
                problems.append(f"claim {name} -> {vn} not pointing back")
            elif phase != "Bound" or (v.get("status") or {}).get("phase") != "Bound":
                problems.append(f"claim {name} bind incomplete ({phase})")
    claims_by_key = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in claims}
    for v in volumes:
        if (v.get("status") or {}).get("phase") not in ("Available", "Bound"):
            problems.append(f"volume {v['metadata']['name']} still {(v.get('status') or {}).get('phase')}")
        ref = v["spec"].get("claimRef")
        if ref and ref.get("uid"):
            c = claims_by_key.get((ref["namespace"], ref["name"]))
            if c is None or c["spec"].get("volumeName") != v["metadata"]["name"]:
                problems.append(f"volume {v['metadata']['name']} reserved for {ref['name']} which is not bound to it")
    ordered = sorted(volumes, key=lambda v: v["metadata"]["name"])
    for c in claims:
        if not c["spec"].get("volumeName"):
            match = find_best_volume_linear(c, ordered, False)
            if match is not None:
                problems.append(f"claim {c['metadata']['name']} pending although {match['metadata']['name']} fits")
    return problems


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_binders_never_double_bind_or_lose_binds(store_url: str) -> None:
    rng = random.Random(1234)
    store = open_store(store_url)
    procs = [subprocess.Popen([sys.executable, "-m", "storage.controllers.manager", store_url, "--binder-only"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        work = [("pv", i) for i in range(N)] + [("pvc", i) for i in range(N)]
        rng.shuffle(work)
        for kind, i in work:
            cls = rng.choice(["", "", "fast"])
            modes = rng.choice(MODES)
            size = rng.choice(SIZES)
            if kind == "pv":
                store.create(PV, {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{i:05d}"},
                                  "spec": {"capacity": {"storage": size}, "accessModes": modes, "storageClassName": cls,
                                           "local": {"path": "/nowhere"}}, "status": {"phase": "Pending"}})
            else:
                store.create(PVC, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                   "metadata": {"name": f"c-{i:05d}", "namespace": rng.choice(["a", "b"])},
                                   "spec": {"accessModes": modes[:1], "storageClassName": cls,
                                            "resources": {"requests": {"storage": size}}}, "status": {"phase": "Pending"}})
        assert all(p.poll() is None for p in procs), "a binder process died"
        last: list[str] = []

        def settled() -> bool:
            nonlocal last
            last = _problems(store)
            return not last

        try:
            wait_for(settled, "binders to converge", 600)
        except AssertionError:
            raise AssertionError(f"{len(last)} problems, e.g. {last[:10]}") from None
        claims, _ = store.list(PVC)
        bound = sum(1 for c in claims if c["spec"].get("volumeName"))
        assert bound > N // 4  # the scenario really exercised binding
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        store.close()
