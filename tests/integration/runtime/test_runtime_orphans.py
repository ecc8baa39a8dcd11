"""What a killed agent leaves in the machine-wide run directory is reaped once its pods' directories are gone,
and nothing of a live pod's (or of an entry without an owner) is touched."""
from __future__ import annotations

import subprocess
from pathlib import Path

from storage.agent.runtime.orphans import OWNER_FILE, reap_orphans
from storage.system.mounts import mounts_under
from support import host_tmp_dir, need_root


def _bundle(run_dir: Path, name: str, owner: Path | None) -> Path:
    bundle = run_dir / "containers" / name
    (bundle / "rootfs").mkdir(parents=True)
    if owner is not None:
        (bundle / OWNER_FILE).write_text(f"{owner}\n")
    return bundle


def test_orphans_of_removed_pod_dirs_are_reaped_and_live_ones_kept() -> None:
    need_root("mounts a tmpfs as a bundle's root")
    with host_tmp_dir("stowage-orphans-") as base:
        run_dir, pods = base / "run", base / "agent" / "pods"
        live_pod, dead_pod = pods / "live", pods / "dead"
        (live_pod / "runtime").mkdir(parents=True)
        (live_pod / "runtime" / "userns").write_text("16777216\n")
        (live_pod / "runtime" / "ip").write_text("127.93.18.1\n")
        dead = _bundle(run_dir, "dead", dead_pod)
        live = _bundle(run_dir, "live", live_pod)
        unowned = _bundle(run_dir, "unowned", None)
        # The dead pod's overlay root is still mounted, as after a SIGKILLed agent.
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(dead / "rootfs")], check=True)
        claims = run_dir / "userns"
        claims.mkdir()
        (claims / "16777216").write_text(f"{live_pod}\n")
        (claims / "16842752").write_text(f"{dead_pod}\n")
        addresses = run_dir / "podips"
        addresses.mkdir()
        (addresses / ".lock").touch()
        (addresses / "127.93.18.1").write_text(f"{live_pod}\n")
        (addresses / "127.93.18.2").write_text(f"{dead_pod}\n")
        (addresses / "127.93.18.3").write_text(f"{live_pod}\n")  # the live pod has another address now

        outside = reap_orphans(run_dir, only_under=base / "elsewhere")
        assert outside == [] and dead.exists()

        removed = reap_orphans(run_dir)
        assert sorted(removed) == sorted([str(dead), str(claims / "16842752"), str(addresses / "127.93.18.2"),
                                          str(addresses / "127.93.18.3")])
        assert not dead.exists() and not mounts_under(run_dir)
        assert live.exists() and unowned.exists() and (claims / "16777216").exists()
        assert sorted(p.name for p in addresses.iterdir()) == [".lock", "127.93.18.1"]
