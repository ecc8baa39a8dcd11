"""Fixtures for the Azure tests; the helpers live in azurite_service.py (a unique module name)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from azurite_service import azurite  # noqa: E402,F401  (fixture)
