"""``stowage bench``: fio on provisioned claims, honest statistics, reports (BN1-BN29)."""
from __future__ import annotations

import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx

from storage.api.quantity import quantity_value
from storage.cli.bench import jobs as jobmod
from storage.cli.bench import report
from storage.cli.bench.runner import (
    BenchFailed,
    Plan,
    Runner,
    Target,
    cleanup_run,
    parse_reports,
    pool_path,
    run_baseline,
)
from storage.cli.context import global_options, session
from storage.cli.errors import CommandError
from storage.errors import StowageError

Obj = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready(node: Obj) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds) and \
        not (node.get("spec") or {}).get("unschedulable")


def choose_nodes(client: Any, node: str | None, selector: str | None, count: int | None) -> list[Obj]:
    """BN23: the nodes to run on; [] lets the scheduler place a single run."""
    if node:
        return [client.get("nodes", node)]
    if not selector and not count:
        return []
    items, _ = client.list("nodes", "", label_selector=selector or None)
    ready = sorted((n for n in items if _ready(n)), key=lambda n: n["metadata"]["name"])
    want = count or 1
    if len(ready) < want:
        raise CommandError(f"--nodes: {want} Ready nodes wanted, {len(ready)} match")
    return ready[:want]


def _default_class(client: Any) -> str:
    items, _ = client.list("storageclasses", "")
    for sc in items:
        if ((sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class")) == "true":
            return sc["metadata"]["name"]
    raise CommandError("--storage-class: required (the cluster has no default StorageClass)")


def _memory(nodes: list[Obj], client: Any) -> int:
    pool = nodes or [n for n in client.list("nodes", "")[0] if _ready(n)]
    mems = [quantity_value(((n.get("status") or {}).get("capacity") or {}).get("memory", "0")) for n in pool]
    return min([m for m in mems if m] or [0])


class Progress:
    """BN22: the live display, one bar per node; nothing but the final table when not a terminal."""

    def __init__(self, console: Any, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress
        self.bars = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[now]}"), TimeElapsedColumn(), console=console,
                                 disable=not enabled, transient=False)
        self.tasks: dict[str, Any] = {}

    def update(self, key: str, done: int, total: int, now: str) -> None:
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(key, total=total, now=now)
        self.bars.update(self.tasks[key], completed=done, total=total, now=now)


@click.group("bench", invoke_without_command=True)
@click.option("--storage-class", "classes", default=None, help="Class to test; a,b,c runs each and compares them.")
@click.option("--size", default=None, help="Claim size (default 4Gi, 1Gi with --quick).")
@click.option("--node", default=None, help="Run on this node.")
@click.option("--node-selector", "-l", "selector", default=None, help="Label selector of the nodes to run on.")
@click.option("--nodes", "count", type=int, default=None, help="Run on N nodes at once (BN23).")
@click.option("--volume-mode", type=click.Choice(["Filesystem", "Block"]), default="Filesystem", show_default=True)
@click.option("--jobs", "job_names", default=None, help="Comma-separated subset of: " + ", ".join(jobmod.BY_NAME))
@click.option("--job-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Your own fio job file (runs in the volume's directory; $FILENAME names the test file or device).")
@click.option("--quick", is_flag=True, help="A smoke run under a minute: small file, short jobs, one repeat.")
@click.option("--repeats", type=click.IntRange(1, 100), default=None, help="Repeats of each job (default 5).")
@click.option("--runtime", type=click.IntRange(1, 3600), default=None, help="Seconds each job measures (default 20).")
@click.option("--ramp", type=click.IntRange(0, 600), default=None, help="Unmeasured seconds before (default 5).")
@click.option("--baseline", is_flag=True, help="Also run the jobs on the node's raw pool and print volume ÷ baseline.")
@click.option("--output-dir", type=click.Path(file_okay=False), default=None, help="Save result.json, report.html, PNGs.")
@click.option("--label-nodes", is_flag=True, help="Record the figures on the nodes as annotations (for placement).")
@click.option("--claim", "existing_claim", default=None,
              help="Benchmark this existing Filesystem claim (its class and size) instead of a new one; it is kept.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds the whole run may take.")
@global_options
@click.pass_context
def bench_command(ctx: click.Context, classes: str | None, size: str | None, node: str | None, selector: str | None,
                  count: int | None, volume_mode: str, job_names: str | None, job_file: str | None, quick: bool,
                  repeats: int | None, runtime: int | None, ramp: int | None, baseline: bool, output_dir: str | None,
                  label_nodes: bool, existing_claim: str | None, timeout: float) -> None:
    """Benchmark storage classes with fio in pods on fresh claims (``stowage bench compare A B`` diffs runs)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # a log or pipe keeps whole rows rather than wrapping at 80 columns
    if count is not None and count < 1:
        raise CommandError("--nodes: must be at least 1")
    if node and (selector or (count or 1) > 1):
        raise CommandError("--node: cannot be combined with --node-selector or --nodes")
    if job_file and job_names:
        raise CommandError("--job-file and --jobs cannot be used together")
    try:
        chosen = jobmod.select(job_names.split(",") if job_names else None)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    sess = session()
    client = sess.client
    if existing_claim:
        if classes or count or selector or node or size or volume_mode != "Filesystem":
            raise CommandError("--claim: cannot be combined with --storage-class, --size, --node(s), "
                               "--node-selector or --volume-mode (the claim decides them)")
        pvc = client.get("persistentvolumeclaims", existing_claim, sess.options.namespace)
        classes = (pvc.get("spec") or {}).get("storageClassName") or ""
        size = ((pvc.get("status") or {}).get("capacity") or {}).get("storage") or \
            pvc["spec"]["resources"]["requests"]["storage"]
    size = size or ("1Gi" if quick else "4Gi")
    try:
        size_bytes = quantity_value(size)
    except (ValueError, StowageError):
        raise CommandError(f"--size: not a quantity: {size!r}") from None
    if size_bytes < 16 << 20:
        raise CommandError("--size: at least 16Mi")
    class_names = [c.strip() for c in classes.split(",") if c.strip()] if classes else [_default_class(client)]
    for name in class_names:
        client.get("storageclasses", name)  # NotFound names the class
    nodes = choose_nodes(client, node, selector, count)
    settings = jobmod.settings(size_bytes, _memory(nodes, client), quick=quick, repeats=repeats, runtime=runtime, ramp=ramp)
    job_text = Path(job_file).read_text() if job_file else None
    started = _now()
    argv = ["stowage", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else ["stowage", "bench"]
    progress = Progress(console, console.is_terminal)
    runners: list[Runner] = []

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    results: list[Obj] = []
    try:
        with progress.bars:
            for cls in class_names:
                plan = Plan(storage_class=cls, size=size, size_bytes=size_bytes, volume_mode=volume_mode, jobs=chosen,
                            settings=settings, namespace=sess.options.namespace, job_file=job_text,
                            existing_claim=existing_claim)
                targets = [Target(None, f"stowage-bench-{plan.run_id}-0", existing_claim)] if existing_claim else [Target(n["metadata"]["name"], f"stowage-bench-{plan.run_id}-{i}", f"stowage-bench-{plan.run_id}-{i}")
                           for i, n in enumerate(nodes)] or [Target(None, f"stowage-bench-{plan.run_id}-0",
                                                                    f"stowage-bench-{plan.run_id}-0")]
                runner = Runner(client, plan, targets, lambda n, d, t, now, c=cls: progress.update(f"{c} on {n}", d, t, now),
                                timeout=timeout)
                runners.append(runner)
                runner.start(together=len(targets) > 1)  # BN23
                finished = runner.wait()
                node_results = []
                for pod_name, (reports, facts) in finished.items():
                    parsed = parse_reports(reports)
                    # When each fio run ended (fio's own clock): shows whether nodes really ran at once.
                    ends = sorted(int(r.get("timestamp", 0)) for runs in reports.values() for r in runs)
                    node_results.append({"node": facts["node"], "pod": pod_name, "facts": facts,
                                         "fio_ends": ends, "jobs": report.summarize_target(parsed),
                                         "fio_version": next((r.get("fio version", "") for rs in reports.values()
                                                              for r in rs), "")})
                problems = runner.cleanup()
                if problems:
                    raise BenchFailed("cleanup: " + "; ".join(problems))
                if baseline:
                    for nr in node_results:
                        pool = pool_path(client.get("nodes", nr["node"]))
                        if not pool:
                            raise CommandError(f"--baseline: node {nr['node']} reports no storage pool")
                        base = run_baseline(plan, pool, lambda d, t, now, n=nr["node"]: progress.update(f"raw pool on {n}", d, t, now))
                        nr["baseline"] = report.summarize_target(parse_reports(base))
                        nr["ratios"] = report.ratios(nr["jobs"], nr["baseline"])
                warnings = [w for nr in node_results for w in
                            report.warnings_for(nr["node"], nr["jobs"], nr["facts"], nr.get("ratios"), volume_mode)]
                results.append({"storage_class": cls, "run_id": plan.run_id, "nodes": node_results, "warnings": warnings})
    except KeyboardInterrupt:
        console.print("interrupted: removing the benchmark's pods and claims", style="bold")
        _cleanup_all(runners, console)
        raise SystemExit(130)
    except BaseException:
        _cleanup_all(runners, console)
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    result = report.build_result(run_id=results[0]["run_id"] if len(results) == 1 else "+".join(r["run_id"] for r in results),
                                 started=started, finished=_now(), argv=argv,
                                 settings={"size_bytes": settings.size, "runtime": settings.runtime, "ramp": settings.ramp,
                                           "repeats": settings.repeats, "quick": settings.quick, "volume_size": size,
                                           "volume_mode": volume_mode, "job_file": job_text,
                                           "jobs": [j.name for j in chosen] if job_text is None else ["custom"]},
                                 classes=results)
    report.print_table(result, console)
    if len(results) > 1:
        from rich.table import Table
        rows = report.side_by_side(result)
        t = Table(title="side by side (all nodes)")
        for h in rows[0]:
            t.add_column(h)
        for r in rows[1:]:
            t.add_row(*r)
        console.print(t)
    if output_dir:
        for p in report.write_outputs(result, Path(output_dir)):
            console.print(f"wrote {p}")
    if label_nodes:
        _label_nodes(client, result, console)


def _cleanup_all(runners: list[Runner], console: Any) -> None:
    """BN2: a second Ctrl-C must not leave half the run behind, so it is ignored while we clean up."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for r in runners:
            try:
                problems = r.cleanup()
            except (StowageError, httpx.HTTPError, OSError) as exc:  # the API may be gone; say so rather than hide the original error
                problems = [f"{type(exc).__name__}: {exc}"]
            for p in problems:
                console.print(f"cleanup: {p} (remove with `stowage bench cleanup --run-id {r.plan.run_id}`)")
    finally:
        signal.signal(signal.SIGINT, old)


def _label_nodes(client: Any, result: Obj, console: Any) -> None:
    """BN25: the placement helper turns figures into node annotations; we merge what it returns."""
    from storage.api.bench_figures import label_node_annotations
    for c in result["classes"]:
        for n in c["nodes"]:
            figures = report.placement_figures(n["jobs"], result["finished"], n.get("fio_version", ""))
            if len(figures) <= 2:  # only measuredAt / fioVersion: no job placement reads has run
                raise CommandError("--label-nodes: none of the jobs placement reads ran (randread-iops, "
                                   "randwrite-iops, seqread-bw, seqwrite-bw, randread-lat, randwrite-lat, fdatasync)")
            annotations = label_node_annotations(c["storage_class"], figures)
            client.patch("nodes", n["node"], {"metadata": {"annotations": annotations}})
            console.print(f"annotated node {n['node']}: {', '.join(sorted(annotations))}")


@bench_command.command("compare")
@click.argument("run1", type=click.Path(exists=True, dir_okay=True))
@click.argument("run2", type=click.Path(exists=True, dir_okay=True))
@click.option("--all", "show_all", is_flag=True, help="Also list the differences within the noise.")
def compare_command(run1: str, run2: str, show_all: bool) -> None:
    """Diff two saved runs (result.json or its directory); say which differences exceed the noise (BN21)."""
    from rich.console import Console
    from rich.table import Table
    docs = []
    for p in (run1, run2):
        path = Path(p) / "result.json" if Path(p).is_dir() else Path(p)
        try:
            docs.append(report.load(path))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    diffs = report.compare(*docs)
    if not diffs:
        raise CommandError("the two runs have no job and figure in common")
    console = Console()
    t = Table(title=f"{docs[0]['run_id']} → {docs[1]['run_id']}")
    for h in ("class", "node", "job", "figure", "run 1", "run 2", "change", "verdict"):
        t.add_column(h)
    shown = 0
    for d in diffs:
        if not d["significant"] and not show_all:
            continue
        verdict = ("better" if d["better"] else "worse") if d["significant"] else "within noise"
        t.add_row(d["class"], d["node"], d["job"], d["figure"], report.fmt(d["a"]), report.fmt(d["b"]),
                  f"{d['change']:+.1%}", verdict)
        shown += 1
    console.print(t)
    sig = sum(d["significant"] for d in diffs)
    console.print(f"{sig} of {len(diffs)} differences exceed the noise (medians' confidence intervals do not overlap)")


@bench_command.command("cleanup")
@click.option("--run-id", default=None, help="Only this run's objects (default: every benchmark's).")
@global_options
def cleanup_command(run_id: str | None) -> None:
    """Remove benchmark pods and claims left by a run that was killed (SIGKILL leaves no chance to clean)."""
    sess = session()
    problems = cleanup_run(sess.client, run_id, sess.options.namespace)
    if problems:
        raise CommandError("; ".join(problems))
    click.echo("benchmark objects removed")
