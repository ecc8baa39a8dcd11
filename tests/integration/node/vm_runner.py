"""Runs one volume-manager pass in its own process, for crash (SIGKILL) tests.

Usage: python vm_runner.py SPEC.json  — SPEC has "data_dir" and "pods":
[{"uid", "namespace", "name", "volumes": [{"name", "source", "pv_name", "mode"}]}].
Prints the sync result as JSON. STOWAGE_FAULT in the environment picks the crash point.
"""
from __future__ import annotations

import json
import sys

from storage.agent.volume_manager import PodVolumes, VolumeManager, VolumeRequest
from volume_plugins.registry import default_registry


def main() -> None:
    spec = json.loads(open(sys.argv[1]).read())
    vm = VolumeManager(spec["data_dir"], default_registry())
    vm.reconstruct()
    pods = [
        PodVolumes(p["uid"], p["namespace"], p["name"], [
            VolumeRequest(v["name"], v["source"], pv_name=v.get("pv_name"), mode=v.get("mode", "Filesystem"))
            for v in p["volumes"]
        ])
        for p in spec["pods"]
    ]
    res = vm.sync(pods)
    print(json.dumps({"paths": res.paths, "errors": res.errors, "teardown_errors": res.teardown_errors}))


if __name__ == "__main__":
    main()
