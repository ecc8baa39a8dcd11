"""Fixtures of the snapshot controller tests; shared helpers live in snapctl_support.py (a unique name)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
