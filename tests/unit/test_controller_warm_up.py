"""PF91: what a controller's first reconcile would load on its critical path is loaded in the background
when the controllers start; a failing warm-up is logged and changes nothing else."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

from storage.controllers.base import Reconciler, Result
from storage.controllers.manager import ControllerManager
from storage.store import open_store


class _Broken(Reconciler):
    name = "broken-warm-up"
    primary = "configmaps"

    def warm_up(self) -> None:
        raise RuntimeError("cannot load")

    def reconcile(self, key: str) -> Result:
        return Result()


class _Recorded(Reconciler):
    name = "recorded-warm-up"
    primary = "secrets"
    warmed: ClassVar[threading.Event] = threading.Event()

    def warm_up(self) -> None:
        self.warmed.set()

    def reconcile(self, key: str) -> Result:
        return Result()


def test_pf91_every_reconciler_is_warmed_up_at_start_even_after_one_fails(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'warm.db'}")
    manager = ControllerManager(store, [_Broken, _Recorded], resources=[])
    _Recorded.warmed.clear()
    try:
        manager.start_workers()
        assert _Recorded.warmed.wait(10)
    finally:
        manager.stop()
        store.close()


def test_pf91_the_schedulers_warm_up_loads_the_provisioners_its_first_placement_needs() -> None:
    """In a fresh interpreter: before the warm-up no cloud provisioner is imported, after it they are."""
    probe = """
import sys
from storage.controllers.scheduler import SchedulerReconciler
assert "provisioners.aws_ebs" not in sys.modules
SchedulerReconciler(None).warm_up()
assert "provisioners.aws_ebs" in sys.modules and "provisioners.azure_disk" in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
