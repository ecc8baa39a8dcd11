"""Fixtures for FlexVolume and other volume types on real loop devices and mounts.

``flex_env`` is a fresh temp directory with a copy of the test drivers as a volume plugin directory
(``plugins/<vendor>~<driver>/<driver>``), a directory for the drivers' backing files, and the drivers'
call log; on the way out every mount and loop device under it is removed (host_tmp_dir).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from support import host_tmp_dir, need_root

DRIVERS = Path(__file__).resolve().parent / "drivers"


@dataclass
class FlexEnv:
    base: Path
    plugin_dir: Path
    backing: Path

    def install(self, driver: str) -> None:
        """Copy one test driver (``stowage~loop``) into the plugin directory."""
        # The other drivers are symlinks to ../stowage~loop/loop: it comes first.
        for name in dict.fromkeys(("stowage~loop", driver)):
            if not (self.plugin_dir / name).exists():
                shutil.copytree(DRIVERS / name, self.plugin_dir / name, symlinks=True)

    def calls(self) -> list[str]:
        log = self.base / "flex-calls.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def flex_env() -> Iterator[FlexEnv]:
    need_root("loop devices and mounts")
    with host_tmp_dir("stowage-flex-") as base:
        env = FlexEnv(base, base / "plugins", base / "backing")
        env.plugin_dir.mkdir()
        env.backing.mkdir()
        yield env
