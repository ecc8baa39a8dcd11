"""py-spy sampling of the benchmarks' processes, and the summary of where their Python CPU went.

``Sampler`` records every thread of some processes, only while a thread holds the GIL (so the samples
are Python CPU, not waiting), into raw collapsed stacks; ``finish`` stops it and prints each process's
top functions by self time and by total time. Used by ``provision.py --profile`` (the burst's agent and
control plane) and ``api_load.py --profile`` (the API server under the clients' creates).
"""
from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

RATE = 50  # samples per second: enough for runs of seconds, light enough not to shift the figures much
# Frames under which nearly every sample of a thread or process lies: left out of the totals, which would
# otherwise open with them and say nothing.
PLUMBING = frozenset({"<module>", "Thread._bootstrap", "Thread._bootstrap_inner", "Thread.run", "_worker",
                      "_WorkItem.run", "BaseProcess._bootstrap", "BaseProcess.run", "spawn_main", "_main"})


def missing() -> str | None:
    """Why ``--profile`` cannot run here, or None. Checked before any set-up, so a missing py-spy does not
    show only after minutes of baseline runs."""
    return None if shutil.which("py-spy") is not None else "--profile needs py-spy: pip install -e '.[profile]'"


class Sampler:
    """py-spy on ``targets`` (name -> pid) from construction until ``finish``; writes ``<name>.txt``
    (raw stacks) and ``<name>.summary.txt`` into ``out``. Only GIL-held samples: without ``--gil``, py-spy
    here counts threads idle in a queue's wait as running. C code that lets the GIL go (SQLite's
    statements, the ssl module) is therefore not in the samples."""

    def __init__(self, out: Path, targets: dict[str, int], rate: int = RATE) -> None:
        spy = shutil.which("py-spy")
        assert spy is not None, "the caller checks missing() before any set-up"
        out.mkdir(parents=True, exist_ok=True)
        self.out = out
        self.rate = rate
        self.procs = {name: subprocess.Popen([spy, "record", "--nonblocking", "--gil", "--rate", str(rate),
                                              "--format", "raw", "-o", str(out / f"{name}.txt"), "-p", str(pid)],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for name, pid in targets.items()}

    def finish(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for name, proc in self.procs.items():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            print(summarize_stacks(self.out / f"{name}.txt", name, self.rate), flush=True)


def _frame(f: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)``: lines of one function counted together."""
    if " (" not in f:
        return f
    func, _, where = f.partition(" (")
    return f"{func} ({where.split(':')[0].rsplit('/', 1)[-1]})"


def summarize_stacks(path: Path, name: str, rate: int, top: int = 15) -> str:
    """Top functions by samples spent in them (self) and under them (total) from py-spy's raw output."""
    if not path.exists():
        return f"[profile {name}] no samples written"
    own: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            under[f] = under.get(f, 0) + n
    if total == 0:
        return f"[profile {name}] no samples"
    lines = [f"[profile {name}] {total} samples ({rate}/s, holding the GIL, all threads)", "  self:"]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    lines.append("  total:")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in sorted(under.items(), key=lambda kv: -kv[1])
              if f.partition(" (")[0] not in PLUMBING][:top]
    path.with_suffix(".summary.txt").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
