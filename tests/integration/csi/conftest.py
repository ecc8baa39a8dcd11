"""Fixtures for the CSI tests; the helpers live in csi_drivers.py (a unique module name)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from csi_drivers import mock_driver  # noqa: E402,F401  (fixture)
