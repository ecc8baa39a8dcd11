"""Fixtures for the Azure tests; the Azurite service lives in tests/azurite_service.py (a unique module name)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The `azurite` fixture comes from tests/conftest.py (tests/azurite_service.py), shared with other suites.
