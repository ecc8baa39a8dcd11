"""Fixtures for the GlusterFS tests: one glusterd per session (gluster_service.py, a unique module name)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gluster_service import glusterd  # noqa: E402,F401  (fixture)
