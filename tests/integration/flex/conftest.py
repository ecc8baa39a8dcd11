"""Fixtures for FlexVolume and other volume types on real loop devices and mounts.

``flex_env`` is a fresh temp directory with a volume plugin directory (``plugins/<vendor>~<driver>/<driver>``)
the test installs drivers into, a directory for the drivers' backing files, and the drivers' call log; on the
way out every mount and loop device under it is removed (host_tmp_dir).
"""
from __future__ import annotations

from typing import Iterator

import pytest

from flex_support import FlexEnv
from support import host_tmp_dir, need_root


@pytest.fixture
def flex_env() -> Iterator[FlexEnv]:
    need_root("loop devices and mounts")
    with host_tmp_dir("stowage-flex-") as base:
        env = FlexEnv(base, base / "plugins", base / "backing")
        env.plugin_dir.mkdir()
        env.backing.mkdir()
        yield env
