"""The FlexVolume tests' environment: a temp directory with a volume plugin directory holding copies of
the test drivers, a directory for their backing files, and their call log."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

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
