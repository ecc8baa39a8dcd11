"""The result document (schema ``stowage.io/bench/v1``), its warnings, the table and the HTML/PNG report."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from storage.cli.bench.stats import aggregate_nodes, difference, summarize_runs

SCHEMA = "stowage.io/bench/v1"
Obj = dict[str, Any]

# The headline figures of each kind of job, in table order.
HEADLINES = ("read_iops", "write_iops", "read_bw_mib", "write_bw_mib", "read_clat_p50_us", "read_clat_p99_us",
             "read_clat_p99.9_us", "write_clat_p50_us", "write_clat_p99_us", "write_clat_p99.9_us",
             "sync_lat_p50_us", "sync_lat_p99_us", "sync_lat_p99.9_us", "cpu_pct")
UNITS = {"iops": "IOPS", "bw_mib": "MiB/s", "us": "µs", "pct": "% CPU"}
MAX_IOPS = 10_000_000
MAX_BW_MIB = 200 * 1024
MIN_SYNC_US = 5.0
BANDWIDTH_JOBS = ("seqread-bw", "seqwrite-bw")
THROUGHPUT_JOBS = ("randread-iops", "randwrite-iops", "seqread-bw", "seqwrite-bw")


def unit(fig: str) -> str:
    return next((u for k, u in UNITS.items() if fig.endswith(k)), "")


def summarize_target(parsed: dict[str, list[Obj]]) -> dict[str, Obj]:
    return {name: summarize_runs(runs) for name, runs in parsed.items()}


def ratios(volume: dict[str, Obj], baseline: dict[str, Obj]) -> dict[str, dict[str, float]]:
    """BN13: volume ÷ baseline of every figure both have (medians)."""
    out: dict[str, dict[str, float]] = {}
    for job, summary in volume.items():
        base = baseline.get(job)
        if not base:
            continue
        out[job] = {f: s["median"] / base["figures"][f]["median"] for f, s in summary["figures"].items()
                    if f in base["figures"] and base["figures"][f]["median"]}
    return out


def warnings_for(node: str, jobs: dict[str, Obj], facts: Obj, job_ratios: dict[str, dict[str, float]] | None,
                 volume_mode: str) -> list[str]:
    """BN14-BN18: results that look cached, fake or impossible."""
    out: list[str] = []
    where = f"{node}:"
    for name, s in jobs.items():
        figs = s["figures"]
        if not s["direct"] and name != "fdatasync":
            out.append(f"{where} {name} ran without direct I/O: the page cache may be measured, not the disk (BN17)")
        if volume_mode == "Filesystem" and not s["disks"]:
            out.append(f"{where} {name}: fio saw no disk under its file (memory-backed or cached?) (BN15)")
        if facts.get("loop_devices"):
            odd = [d for d in s["disks"] if d not in facts["loop_devices"]]
            if odd:
                out.append(f"{where} {name}: fio's disk statistics name {', '.join(odd)}, not the volume's "
                           f"{', '.join(sorted(facts['loop_devices']))} (BN15)")
        for fig, v in figs.items():
            m = v["median"]
            if (fig.endswith("_iops") and m > MAX_IOPS) or (fig.endswith("_bw_mib") and m > MAX_BW_MIB):
                out.append(f"{where} {name} {fig} = {m:.0f} is beyond any storage device: cached (BN18)")
            if fig == "sync_lat_p50_us" and m < MIN_SYNC_US:
                out.append(f"{where} {name}: fdatasync takes {m:.1f} µs, too fast to reach stable storage (BN18)")
        for fig, r in (job_ratios or {}).get(name, {}).items():
            if fig.startswith("read_") and (fig.endswith(("_iops", "_bw_mib"))) and r > 1.10:
                out.append(f"{where} {name} {fig} is {r:.2f}x the raw pool's: reads served from a cache (BN14)")
    for dev, dio in sorted((facts.get("loop_devices") or {}).items()):
        if not dio:
            out.append(f"{where} the volume's loop device {dev} has no direct I/O: the host's page cache "
                       "inflates every figure (BN16)")
    return out


def build_result(*, run_id: str, started: str, finished: str, argv: list[str], settings: Obj,
                 classes: list[Obj]) -> Obj:
    """BN19: the versioned result; ``classes[i]`` holds ``storage_class``, ``nodes`` (each ``node``,
    ``jobs``, ``facts``, optional ``baseline`` and ``ratios``), ``aggregate`` and ``warnings``."""
    for c in classes:
        c["aggregate"] = {job: aggregate_nodes([n["jobs"][job] for n in c["nodes"] if job in n["jobs"]])
                          for job in sorted(set().union(*(n["jobs"] for n in c["nodes"])))} if c["nodes"] else {}
    return {"schema": SCHEMA, "run_id": run_id, "started": started, "finished": finished, "command": argv,
            "settings": settings, "classes": classes,
            "warnings": [w for c in classes for w in c.get("warnings", [])]}


def load(path: str | Path) -> Obj:
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a stowage bench result (schema {SCHEMA})")
    return doc


# ---- the table ----------------------------------------------------------------------------

def fmt(v: float) -> str:
    if v >= 10000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if v >= 1 else f"{v:.2g}"


def cell(s: Obj) -> str:
    """median [min–max]"""
    return f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]"


def table_rows(result: Obj) -> list[list[str]]:
    """One row per (class, node, job, figure): median [min–max], CI, ratio to baseline."""
    rows: list[list[str]] = []
    for c in result["classes"]:
        for n in c["nodes"]:
            for job, s in n["jobs"].items():
                for fig in HEADLINES:
                    if fig not in s["figures"]:
                        continue
                    v = s["figures"][fig]
                    ratio = (n.get("ratios") or {}).get(job, {}).get(fig)
                    rows.append([c["storage_class"], n["node"], job, f"{fig} ({unit(fig)})", cell(v),
                                 f"{fmt(v['ci'][0])}–{fmt(v['ci'][1])} @{v['ci_level']:.0%}",
                                 "" if ratio is None else f"{ratio:.2f}"])
        if len(c["nodes"]) > 1:
            for job, figs in c["aggregate"].items():
                for fig in HEADLINES:
                    if fig in figs:
                        rows.append([c["storage_class"], f"all {len(c['nodes'])}", job, f"{fig} ({unit(fig)})",
                                     fmt(figs[fig]), "sum" if fig.endswith(("_iops", "_bw_mib")) else "worst", ""])
    return rows


HEADER = ["class", "node", "job", "figure", "median [min–max]", "CI of median", "÷ baseline"]


def print_table(result: Obj, console: Any) -> None:
    from rich.table import Table
    t = Table(title=f"stowage bench {result['run_id']}", show_lines=False)
    for h in HEADER:
        t.add_column(h, justify="right" if h not in ("class", "node", "job", "figure") else "left")
    for row in table_rows(result):
        t.add_row(*row)
    console.print(t)
    for w in result["warnings"]:
        console.print(f"[bold yellow]warning:[/] {w}")


def side_by_side(result: Obj) -> list[list[str]]:
    """BN20: with several classes, one row per (job, figure), one column per class (node aggregate)."""
    names = [c["storage_class"] for c in result["classes"]]
    rows = []
    jobs = sorted(set().union(*(c["aggregate"] for c in result["classes"])))
    for job in jobs:
        for fig in HEADLINES:
            vals = [c["aggregate"].get(job, {}).get(fig) for c in result["classes"]]
            if any(v is not None for v in vals):
                rows.append([job, fig] + ["-" if v is None else fmt(v) for v in vals])
    return [["job", "figure", *names]] + rows


# ---- figures for placement -----------------------------------------------------------------------

# (job, figure, factor) behind each key of the placement annotation (storage.api.bench_figures, BP1);
# its bandwidth is in MB/s (10^6 bytes), ours in MiB/s.
PLACEMENT_FIGURES = {
    "randReadIOPS": ("randread-iops", "read_iops", 1.0),
    "randWriteIOPS": ("randwrite-iops", "write_iops", 1.0),
    "seqReadMBps": ("seqread-bw", "read_bw_mib", 1.048576),
    "seqWriteMBps": ("seqwrite-bw", "write_bw_mib", 1.048576),
    "readLatencyP99Us": ("randread-lat", "read_clat_p99_us", 1.0),
    "writeLatencyP99Us": ("randwrite-lat", "write_clat_p99_us", 1.0),
    "fsyncLatencyP99Us": ("fdatasync", "sync_lat_p99_us", 1.0),
}


def placement_figures(jobs: dict[str, Obj], finished: str, fio_version: str = "") -> dict[str, Any]:
    """BN25: one node's medians under the placement annotation's keys (only the jobs that ran)."""
    out: dict[str, Any] = {}
    for key, (job, fig, factor) in PLACEMENT_FIGURES.items():
        s = jobs.get(job, {}).get("figures", {}).get(fig)
        if s is not None:
            out[key] = round(s["median"] * factor, 3)
    out["measuredAt"] = finished
    if fio_version:
        out["fioVersion"] = fio_version
    return out


# ---- comparison of two saved runs --------------------------------------------------------------

def compare(a: Obj, b: Obj) -> list[Obj]:
    """BN21: every (class, node, job, figure) present in both runs, with its change and whether the change
    exceeds the noise. Classes and nodes are matched by name; a single-node run matches any one node."""
    out: list[Obj] = []
    for ca in a["classes"]:
        cb = next((c for c in b["classes"] if c["storage_class"] == ca["storage_class"]), None)
        if cb is None and len(a["classes"]) == 1 and len(b["classes"]) == 1:
            cb = b["classes"][0]
        if cb is None:
            continue
        for na in ca["nodes"]:
            nb = next((n for n in cb["nodes"] if n["node"] == na["node"]), None)
            if nb is None and len(ca["nodes"]) == 1 and len(cb["nodes"]) == 1:
                nb = cb["nodes"][0]
            if nb is None:
                continue
            for job, sa in na["jobs"].items():
                sb = nb["jobs"].get(job)
                if not sb:
                    continue
                for fig in HEADLINES:
                    if fig in sa["figures"] and fig in sb["figures"]:
                        d = difference(fig, sa["figures"][fig], sb["figures"][fig])
                        out.append({"class": ca["storage_class"], "node": na["node"], "job": job, "figure": fig, **d})
    return out


# ---- HTML and PNG ------------------------------------------------------------------------------

def _bars(result: Obj, kind: str, path: Path) -> bool:
    """Bars of the medians with min–max whiskers, one bar group per job, one colour per class/node."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    suffix = "_iops" if kind == "iops" else "_bw_mib"
    series: list[tuple[str, dict[str, Obj]]] = []
    for c in result["classes"]:
        for n in c["nodes"]:
            label = c["storage_class"] if len(c["nodes"]) == 1 else f"{c['storage_class']} / {n['node']}"
            series.append((label, n["jobs"]))
            if n.get("baseline"):
                series.append((f"raw pool ({n['node']})", n["baseline"]))
    # A 1 MiB job's IOPS and a 4 KiB job's MiB/s say nothing the other chart does not: each chart
    # shows the jobs made for it (and a user's own job in both).
    wanted = (lambda j: j not in BANDWIDTH_JOBS) if kind == "iops" else (lambda j: j in BANDWIDTH_JOBS or j == "custom")
    keys = sorted({(job, fig) for _, jobs in series for job, s in jobs.items() for fig in s["figures"]
                   if fig.endswith(suffix) and wanted(job)})
    if not keys:
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(keys) + 2), 4.5), dpi=110)
    width = 0.8 / len(series)
    for i, (label, jobs) in enumerate(series):
        xs, meds, lo, hi = [], [], [], []
        for k, (job, f) in enumerate(keys):
            s = jobs.get(job, {}).get("figures", {}).get(f)
            if s is None:
                continue
            xs.append(k + (i - (len(series) - 1) / 2) * width)
            meds.append(s["median"])
            lo.append(s["median"] - s["min"])
            hi.append(s["max"] - s["median"])
        ax.bar(xs, meds, width * 0.95, yerr=[lo, hi], capsize=3, label=label)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{j}\n{f.split('_')[0]}" for j, f in keys], fontsize=8)
    ax.set_ylabel("IOPS" if kind == "iops" else "MiB/s")
    ax.set_title(("IOPS" if kind == "iops" else "Bandwidth") + " (median of repeats; whiskers: min–max)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _latency(result: Obj, path: Path) -> bool:
    """Completion-latency (and fdatasync) percentile curves, log scale, one line per job and class/node."""
    import matplotlib
    matplotlib.use("Agg")
    import math

    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter
    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    drawn = 0
    multi = sum(len(c["nodes"]) for c in result["classes"]) > 1
    for c in result["classes"]:
        for n in c["nodes"]:
            for job, s in n["jobs"].items():
                if job in THROUGHPUT_JOBS:
                    continue  # a saturated queue's latency is queueing, not the device: it would hide the rest
                for curve, pts in s["curves"].items():
                    ps = sorted(pts, key=float)
                    xs = [-math.log10(1 - float(p) / 100) for p in ps]
                    label = f"{job} {curve.split('_')[0]}" + (f" ({c['storage_class']}/{n['node']})" if multi else "")
                    ax.plot(xs, [pts[p] for p in ps], marker=".", label=label)
                    drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ticks = [50, 90, 99, 99.9, 99.99]
    ax.xaxis.set_major_locator(FixedLocator([-math.log10(1 - t / 100) for t in ticks]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"p{100 * (1 - 10 ** -x):.4g}"))
    ax.set_yscale("log")
    ax.set_ylabel("latency (µs)")
    ax.set_xlabel("percentile")
    ax.set_title("Latency percentiles (completion latency; fdatasync for the sync job)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_outputs(result: Obj, out_dir: Path) -> list[Path]:
    """BN19, BN22: result.json, one PNG per plot and report.html that shows them with the table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "result.json"]
    written[0].write_text(json.dumps(result, indent=1, sort_keys=True))
    plots = []
    for name, draw in (("iops.png", lambda p: _bars(result, "iops", p)),
                       ("bandwidth.png", lambda p: _bars(result, "bandwidth", p)),
                       ("latency.png", lambda p: _latency(result, p))):
        if draw(out_dir / name):
            plots.append(name)
            written.append(out_dir / name)
    rows = table_rows(result)
    esc = html.escape
    table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in HEADER) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    warn = "".join(f"<li>{esc(w)}</li>" for w in result["warnings"]) or "<li>none</li>"
    s = result["settings"]
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>stowage bench {esc(result['run_id'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:nth-child(-n+4){{text-align:left}}
img{{max-width:100%;display:block;margin:1em 0}}</style></head><body>
<h1>stowage bench {esc(result['run_id'])}</h1>
<p>{esc(result['started'])} – {esc(result['finished'])}; classes {esc(', '.join(c['storage_class'] for c in result['classes']))};
volume {esc(str(s.get('volume_size')))} ({esc(str(s.get('volume_mode')))}); test file {s.get('size_bytes', 0) >> 20} MiB;
{s.get('repeats')} repeats of {s.get('runtime')} s after a {s.get('ramp')} s ramp; direct I/O.</p>
<h2>Warnings</h2><ul>{warn}</ul>
{''.join(f'<img src="{p}" alt="{p}">' for p in plots)}
<h2>Figures</h2>{table}
<p>Command: <code>{esc(' '.join(result['command']))}</code></p></body></html>"""
    (out_dir / "report.html").write_text(doc)
    written.append(out_dir / "report.html")
    return written
