"""Run the real ``stowage`` console script as a subprocess."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support import stowage_executable


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    kubeconfig: Path
    server: Any
    cwd: Path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("KUBECONFIG", None)
        env["STOWAGE_DATA_DIR"] = str(self.cwd / "no-default-data-dir")
        return env

    def run(self, *args: str, stdin: str | None = None, kubeconfig: bool = True, timeout: float = 60) -> Result:
        argv = [stowage_executable(), *args]
        if kubeconfig:
            argv += ["--kubeconfig", str(self.kubeconfig)]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout,
                              cwd=self.cwd, env=self.env())
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.code == 0, f"stowage {' '.join(args)} failed ({result.code}): {result.err}"
        return result.out

    def client(self) -> Any:
        return self.server.client()


def parse_table(text: str, headers: list[str]) -> list[dict[str, str]]:
    """Rows as {header: cell}, cut at the header's column offsets; fails unless the header is exactly ``headers``."""
    lines = text.rstrip("\n").split("\n")
    head = lines[0]
    starts = []
    pos = 0
    for h in headers:
        at = head.index(h, pos)
        assert head[pos:at].strip() == "", f"unexpected header text before {h!r}: {head!r}"
        starts.append(at)
        pos = at + len(h)
    assert head[pos:].strip() == "", f"extra headers: {head!r}"
    rows = []
    for line in lines[1:]:
        cells = {}
        for i, h in enumerate(headers):
            end = starts[i + 1] if i + 1 < len(headers) else None
            cells[h] = line[starts[i]:end].strip()
        rows.append(cells)
    return rows
