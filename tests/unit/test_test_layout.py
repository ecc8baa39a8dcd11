"""The test tree itself: pytest imports test files by basename (rootdir-relative
"prepend" mode, so helper modules next to the tests can be imported), which
makes two test files with one basename collide at collection time."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_python_module_basenames_are_unique_across_the_test_tree() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name in ("conftest.py", "__init__.py") or "__pycache__" in path.parts:
            continue
        seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"rename these so each basename is unique: {clashes}"
