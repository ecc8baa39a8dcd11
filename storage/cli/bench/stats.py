"""Pure statistics and fio-JSON parsing for ``stowage bench`` (BN8-BN12).

Nothing here touches the cluster or the host: fio's JSON goes in, figures come out,
so every rule about what a figure means is tested on real fio output.
"""
from __future__ import annotations

import math
from statistics import median
from typing import Any

# The latency percentiles fio reports by default include these; we ask for them explicitly
# (``--percentile_list``) so every job's curve has the same points.
PERCENTILES = (1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99)
HEADLINE = {"p50": 50.0, "p99": 99.0, "p99.9": 99.9}
CI_LEVEL = 0.95


class FioOutputError(ValueError):
    """fio's output is not the JSON of a finished job."""


def _percentiles(block: dict[str, Any] | None) -> dict[float, float]:
    """fio's ``{"99.900000": ns}`` as ``{99.9: microseconds}``; empty when fio had no samples."""
    if not block or not block.get("N"):
        return {}
    return {float(k): float(v) / 1000.0 for k, v in (block.get("percentile") or {}).items()}


def parse_fio(report: dict[str, Any]) -> dict[str, Any]:
    """One fio run (``--output-format=json``, one job or ``group_reporting``) as flat figures.

    BN8: IOPS and bandwidth per direction, latency from the completion latency (``clat_ns``)
    percentiles in microseconds, the fdatasync latency from ``sync.lat_ns`` percentiles, CPU as
    usr+sys percent of one CPU, and the devices fio's disk statistics name.
    """
    jobs = report.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise FioOutputError("fio's JSON has no jobs")
    job = jobs[0]
    if job.get("error"):
        raise FioOutputError(f"fio job {job.get('jobname')!r} failed with error {job['error']}")
    figures: dict[str, float] = {}
    curves: dict[str, dict[float, float]] = {}
    for direction in ("read", "write"):
        side = job.get(direction) or {}
        if not side.get("total_ios"):
            continue
        figures[f"{direction}_iops"] = float(side["iops"])
        figures[f"{direction}_bw_mib"] = float(side["bw_bytes"]) / (1 << 20)
        pct = _percentiles(side.get("clat_ns"))
        if pct:
            curves[f"{direction}_clat"] = pct
            for label, p in HEADLINE.items():
                if p in pct:
                    figures[f"{direction}_clat_{label}_us"] = pct[p]
    sync = job.get("sync") or {}
    pct = _percentiles(sync.get("lat_ns"))
    if pct:
        curves["sync_lat"] = pct
        for label, p in HEADLINE.items():
            if p in pct:
                figures[f"sync_lat_{label}_us"] = pct[p]
    if not figures:
        raise FioOutputError(f"fio job {job.get('jobname')!r} did no I/O")
    figures["cpu_pct"] = float(job.get("usr_cpu", 0.0)) + float(job.get("sys_cpu", 0.0))
    options = job.get("job options") or {}
    direct = str(options.get("direct", (report.get("global options") or {}).get("direct", "0"))) == "1"
    return {
        "figures": figures,
        "curves": {k: {str(p): v for p, v in sorted(c.items())} for k, c in curves.items()},
        "disks": sorted(d.get("name", "") for d in report.get("disk_util") or [] if d.get("name")),
        "direct": direct,
        "fio_version": report.get("fio version", ""),
    }


def _binom_cdf(k: int, n: int) -> float:
    return sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n


def median_ci(values: list[float], level: float = CI_LEVEL) -> tuple[float, float, float]:
    """BN9: a distribution-free confidence interval of the median from order statistics.

    The interval [x(k), x(n-k+1)] covers the true median with probability 1 - 2*P(B <= k-1),
    B ~ Binomial(n, 1/2). We take the narrowest such interval reaching ``level``; with too few
    repeats to reach it (n < 6 for 95%) it is [min, max] and the coverage it really has
    (75% for 3 repeats, 93.75% for 5) is returned, never a claimed 95%.
    """
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    if n == 1:
        return xs[0], xs[0], 0.0
    best = (xs[0], xs[-1], 1 - 2 * _binom_cdf(0, n))
    for k in range(1, n // 2 + 1):
        coverage = 1 - 2 * _binom_cdf(k - 1, n)
        if coverage < level:
            break
        best = (xs[k - 1], xs[n - k], coverage)
    return best


def summarize(values: list[float]) -> dict[str, Any]:
    """BN9: median, min, max, the median's confidence interval and its coverage, of N repeats."""
    lo, hi, coverage = median_ci(values)
    return {"median": median(values), "min": min(values), "max": max(values), "ci": [lo, hi],
            "ci_level": round(coverage, 4), "n": len(values), "values": list(values)}


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A job's repeats (each ``parse_fio``'s result) as one summary: every figure over the repeats,
    and each latency curve as the per-percentile median."""
    if not runs:
        raise ValueError("no runs")
    keys = sorted(set().union(*(r["figures"] for r in runs)))
    figures = {k: summarize([r["figures"][k] for r in runs if k in r["figures"]]) for k in keys}
    curves: dict[str, dict[str, float]] = {}
    for name in sorted(set().union(*(r["curves"] for r in runs))):
        points = sorted(set().union(*(r["curves"].get(name, {}) for r in runs)), key=float)
        curves[name] = {p: median([r["curves"][name][p] for r in runs if p in r["curves"].get(name, {})]) for p in points}
    return {"figures": figures, "curves": curves, "disks": sorted(set().union(*(r["disks"] for r in runs))),
            "direct": all(r["direct"] for r in runs), "repeats": len(runs)}


def aggregate_nodes(per_node: list[dict[str, Any]]) -> dict[str, float]:
    """BN24: nodes run at once; throughput adds up (sum of medians), latency and CPU are the worst node's."""
    out: dict[str, float] = {}
    keys = sorted(set().union(*(n["figures"] for n in per_node))) if per_node else []
    for key in keys:
        meds = [n["figures"][key]["median"] for n in per_node if key in n["figures"]]
        out[key] = sum(meds) if key.endswith(("_iops", "_bw_mib")) else max(meds)
    return out


def higher_is_better(figure: str) -> bool:
    return figure.endswith(("_iops", "_bw_mib"))


def difference(figure: str, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """BN21: B against A for one figure; ``significant`` when both have repeats and the two medians'
    confidence intervals do not overlap (the change is larger than the run-to-run noise both runs
    measured); ``better`` says whether B improved on A (more throughput, less latency or CPU)."""
    ma, mb = a["median"], b["median"]
    change = (mb - ma) / ma if ma else (math.inf if mb else 0.0)
    overlap = not (a["ci"][1] < b["ci"][0] or b["ci"][1] < a["ci"][0])
    significant = not overlap and a["n"] > 1 and b["n"] > 1
    better = ((mb > ma) == higher_is_better(figure)) if significant else None
    return {"a": ma, "b": mb, "change": change, "significant": significant, "better": better}
