"""Fixtures for the node-agent tests; the helpers live in agent_cluster.py (a unique module name,
so these tests can run in one session with other suites' conftest modules)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_cluster import cluster, tmp_base  # noqa: E402,F401  (fixtures)
