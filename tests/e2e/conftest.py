"""Fixtures of the end-to-end tests; the harness itself is in stowage_e2e.py."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from stowage_e2e import Stowage, remove_data_dir
from support import need_programs, need_root


@pytest.fixture(scope="module")
def start_stowage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stowage]]:
    """``start_stowage(files, env=None, args=())``: one ``stowage up`` per module (``env`` added to its
    environment, ``args`` to its command line), checked and cleaned at the end."""
    need_root("pods run in runc containers on loop-backed volumes")
    need_programs("runc", "losetup", "mkfs.ext4", "nsenter")
    started: list[Stowage] = []
    data_dirs: list[Path] = []

    def start(files: list[Path], env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> Stowage:
        data_dir = tmp_path_factory.mktemp("stowage-e2e")
        data_dirs.append(data_dir)
        stowage = Stowage(data_dir, files, env, args)
        started.append(stowage)  # before waiting: a start that fails must still be stopped
        stowage.wait_started()
        return stowage

    try:
        yield start
    finally:
        problems: list[str] = []
        for stowage in started:
            problems += stowage.stop()
        for data_dir in data_dirs:  # a start that failed half-way still gets cleaned
            problems += remove_data_dir(data_dir)
        if problems:
            pytest.fail("teardown found leftovers (cleaned up by force):\n" + "\n".join(problems))
