"""Statistics, fio-JSON parsing, warnings, comparison and the report of ``stowage bench``, on real fio output
(fio runs here on a temp directory; no cluster)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from storage.cli.bench import jobs as jobmod
from storage.cli.bench import report
from storage.cli.bench.runner import MARK, BenchFailed, parse_log, progress_of
from storage.cli.bench.stats import (
    FioOutputError,
    difference,
    median_ci,
    parse_fio,
    summarize,
    summarize_runs,
)

MiB = 1 << 20


def fio(tmp: Path, job: jobmod.Job, *, direct: bool = True) -> dict[str, Any]:
    if not shutil.which("fio"):
        pytest.skip("fio is not installed")
    s = jobmod.Settings(size=8 * MiB, runtime=1, ramp=0, repeats=1)
    argv = jobmod.fio_argv(job, s, str(tmp / "f.dat"))
    if not direct:
        argv = [a for a in argv if not a.startswith("--direct")] + ["--direct=0"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out[out.find("{"):])


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fio", numbered=True)
    # /tmp is on the host's disk here; O_DIRECT needs a filesystem that has it (not tmpfs).
    return {name: fio(tmp, jobmod.BY_NAME[name]) for name in ("randread-lat", "mixed-70-30", "fdatasync", "seqwrite-bw")}


def test_parse_fio_read_figures_and_percentiles(reports: dict[str, dict[str, Any]]) -> None:
    """BN8: IOPS, bandwidth, clat p50/p99/p99.9 in µs from fio's clat_ns percentiles, CPU usr+sys, disks."""
    raw = reports["randread-lat"]
    p = parse_fio(raw)
    side = raw["jobs"][0]["read"]
    assert p["figures"]["read_iops"] == pytest.approx(side["iops"])
    assert p["figures"]["read_bw_mib"] == pytest.approx(side["bw_bytes"] / MiB)
    assert p["figures"]["read_clat_p99_us"] == pytest.approx(side["clat_ns"]["percentile"]["99.000000"] / 1000)
    assert p["figures"]["read_clat_p50_us"] <= p["figures"]["read_clat_p99_us"] <= p["figures"]["read_clat_p99.9_us"]
    assert "write_iops" not in p["figures"]
    job = raw["jobs"][0]
    assert p["figures"]["cpu_pct"] == pytest.approx(job["usr_cpu"] + job["sys_cpu"])
    assert p["direct"] is True
    assert p["disks"] == sorted(d["name"] for d in raw["disk_util"])
    assert {float(k) for k in p["curves"]["read_clat"]} >= {50.0, 99.0, 99.9}


def test_parse_fio_mixed_and_fdatasync(reports: dict[str, dict[str, Any]]) -> None:
    """BN3, BN8: the mixed job reports both directions (about 70/30); the etcd job its fdatasync percentiles."""
    mixed = parse_fio(reports["mixed-70-30"])["figures"]
    share = mixed["read_iops"] / (mixed["read_iops"] + mixed["write_iops"])
    assert 0.6 < share < 0.8
    sync = parse_fio(reports["fdatasync"])
    raw_sync = reports["fdatasync"]["jobs"][0]["sync"]["lat_ns"]["percentile"]
    assert sync["figures"]["sync_lat_p99_us"] == pytest.approx(raw_sync["99.000000"] / 1000)
    assert sync["direct"] is False  # etcd's check goes through the page cache and syncs each write


def test_parse_fio_rejects_failed_or_empty_jobs(reports: dict[str, dict[str, Any]]) -> None:
    """BN8: a job with an error or no I/O is not a figure."""
    bad = json.loads(json.dumps(reports["randread-lat"]))
    bad["jobs"][0]["error"] = 5
    with pytest.raises(FioOutputError, match="error 5"):
        parse_fio(bad)
    with pytest.raises(FioOutputError):
        parse_fio({"jobs": []})


def test_median_ci_coverage_is_honest() -> None:
    """BN9: with 3 repeats the interval is min–max at 75%; 5 at 93.75%; from 6 on a 95% interval inside."""
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0, 0.75)
    assert median_ci([5, 1, 4, 2, 3])[2] == pytest.approx(0.9375)
    lo, hi, cov = median_ci([float(x) for x in range(1, 21)])
    assert cov >= 0.95 and 1 < lo < 10 and 11 < hi < 20
    s = summarize([10.0, 30.0, 20.0])
    assert s["median"] == 20.0 and s["min"] == 10.0 and s["max"] == 30.0 and s["n"] == 3


def test_summarize_runs_uses_medians_over_repeats(reports: dict[str, dict[str, Any]]) -> None:
    """BN9: every figure is the median of the repeats; the curve is the per-percentile median."""
    one = parse_fio(reports["randread-lat"])
    runs = [json.loads(json.dumps(one)) for _ in range(3)]
    for factor, r in zip((1.0, 2.0, 3.0), runs):
        r["figures"]["read_iops"] *= factor
    s = summarize_runs(runs)
    assert s["figures"]["read_iops"]["median"] == pytest.approx(2 * one["figures"]["read_iops"])
    assert s["figures"]["read_iops"]["min"] == pytest.approx(one["figures"]["read_iops"])
    assert s["repeats"] == 3 and s["direct"] is True


def test_difference_flags_only_changes_beyond_the_noise() -> None:
    """BN21: overlapping intervals are noise; disjoint ones a change, better or worse by the figure's sense."""
    a, b, c = summarize([100.0, 102, 98]), summarize([101.0, 99, 103]), summarize([150.0, 155, 149])
    assert difference("read_iops", a, b)["significant"] is False
    d = difference("read_iops", a, c)
    assert d["significant"] is True and d["better"] is True and d["change"] == pytest.approx(0.5)
    assert difference("read_clat_p99_us", a, c)["better"] is False  # more latency is worse
    assert difference("read_iops", summarize([1.0]), summarize([9.0]))["significant"] is False  # one repeat: no noise known


def test_test_size_follows_the_25x_rule_where_it_fits() -> None:
    """BN5: 25 s of bandwidth (or half the memory), at most 75% of the volume; --quick is small."""
    bw = 100 * MiB
    assert jobmod.test_size(100 << 30, 2 << 30, bw) == 25 * bw
    assert jobmod.test_size(100 << 30, 16 << 30, bw) == 8 << 30
    assert jobmod.test_size(1 << 30, 16 << 30, bw) == int((1 << 30) * 0.75) // MiB * MiB
    assert jobmod.test_size(1 << 30, 16 << 30, bw, quick=True) == 64 * MiB


def test_fio_argv_defaults_give_valid_numbers() -> None:
    """BN4: direct I/O, ramp, time-based, fresh random pattern; the etcd job syncs each write without O_DIRECT."""
    s = jobmod.Settings(size=64 * MiB, runtime=20, ramp=5, repeats=5)
    argv = jobmod.fio_argv(jobmod.BY_NAME["randread-iops"], s, "/data/x")
    assert {"--direct=1", "--time_based", "--runtime=20", "--ramp_time=5", "--randrepeat=0", "--iodepth=64"} <= set(argv)
    sync = jobmod.fio_argv(jobmod.BY_NAME["fdatasync"], s, "/data/x")
    assert "--fdatasync=1" in sync and "--direct=0" in sync and "--direct=1" not in sync
    with pytest.raises(ValueError, match="unknown job nope"):
        jobmod.select(["nope"])


def _log(reports: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name in ("randread-lat", "fdatasync"):
        lines += [f"{MARK} begin {name} 1", f"{MARK} json {name} 1", json.dumps(reports[name], indent=1), f"{MARK} end {name} 1"]
    return "\n".join(lines + [f"{MARK} done"])


def test_pod_log_parsing_and_progress(reports: dict[str, dict[str, Any]]) -> None:
    """BN1, BN22: the fio reports come back from the pod's log by job; progress counts finished runs."""
    text = _log(reports)
    got = parse_log(text)
    assert list(got) == ["randread-lat", "fdatasync"] and got["fdatasync"][0] == reports["fdatasync"]
    assert progress_of(text) == (2, "done")
    assert progress_of(f"{MARK} begin seqread-bw 2\n") == (0, "seqread-bw #2")
    order = ["randread-lat", "seqread-bw", "fdatasync"]
    assert progress_of(f"{MARK} begin seqread-bw 2\n", order) == (4, "seqread-bw #2")
    assert progress_of(f"{MARK} end fdatasync 2\n", order) == (6, "fdatasync #2")
    with pytest.raises(BenchFailed, match="fio job x .repeat 1. failed: fio: bad option"):
        parse_log(f"{MARK} begin x 1\n{MARK} fail x 1\nfio: bad option --nope\n")


def _result(reports: dict[str, dict[str, Any]], scale: float = 1.0, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    parsed = {n: [parse_fio(r)] * 3 for n, r in reports.items()}
    jobs = report.summarize_target(parsed)
    for s in jobs.values():
        for f in s["figures"].values():
            f.update(median=f["median"] * scale, min=f["min"] * scale, max=f["max"] * scale,
                     ci=[f["ci"][0] * scale, f["ci"][1] * scale])
    node = {"node": "n1", "pod": "p", "facts": facts or {}, "jobs": jobs}
    return report.build_result(run_id="r", started="s", finished="f", argv=["stowage", "bench"],
                               settings={"repeats": 3}, classes=[{"storage_class": "c", "run_id": "r", "nodes": [node], "warnings": []}])


def test_warnings_for_cached_or_fake_results(reports: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """BN14-BN17: reads beyond the baseline, an unexpected disk, a loop device without direct I/O, no direct I/O."""
    jobs = _result(reports)["classes"][0]["nodes"][0]["jobs"]
    w = report.warnings_for("n1", jobs, {"loop_devices": {"loop7": False}}, {"randread-lat": {"read_iops": 3.0}}, "Filesystem")
    text = "\n".join(w)
    assert "BN14" in text and "3.00x the raw pool" in text
    assert "loop7 has no direct I/O" in text
    assert "name" in text and "not the volume's loop7" in text  # fio's disk here is the host's, not loop7
    cached = parse_fio(fio(tmp_path, jobmod.BY_NAME["randread-lat"], direct=False))
    w2 = report.warnings_for("n1", {"randread-lat": summarize_runs([cached])}, {}, None, "Filesystem")
    assert any("without direct I/O" in x for x in w2)
    clean = report.warnings_for("n1", jobs, {}, {"randread-lat": {"read_iops": 0.9}}, "Filesystem")
    assert clean == []


def test_compare_and_outputs(reports: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """BN19-BN22: a versioned JSON that loads back; compare finds the 2x change; the report and PNGs exist."""
    a, b = _result(reports), _result(reports, scale=2.0)
    written = report.write_outputs(b, tmp_path / "out")
    names = {p.name for p in written}
    assert {"result.json", "report.html", "iops.png", "bandwidth.png", "latency.png"} <= names
    assert all((tmp_path / "out" / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names if n.endswith(".png"))
    assert "latency.png" in (tmp_path / "out" / "report.html").read_text()
    loaded = report.load(tmp_path / "out" / "result.json")
    assert loaded["schema"] == "stowage.io/bench/v1"
    diffs = report.compare(a, loaded)
    iops = next(d for d in diffs if d["job"] == "randread-lat" and d["figure"] == "read_iops")
    assert iops["change"] == pytest.approx(1.0) and iops["significant"] is True and iops["better"] is True
    lat = next(d for d in diffs if d["job"] == "randread-lat" and d["figure"] == "read_clat_p99_us")
    assert lat["significant"] is True and lat["better"] is False  # twice the latency is worse
    with pytest.raises(ValueError, match="not a stowage bench result"):
        (tmp_path / "x.json").write_text("{}")
        report.load(tmp_path / "x.json")


def test_placement_figures_use_the_annotation_keys(reports: dict[str, dict[str, Any]]) -> None:
    """BN25: the medians of the jobs placement reads, under storage.api.bench_figures' keys; MiB/s as MB/s."""
    jobs = _result(reports)["classes"][0]["nodes"][0]["jobs"]
    figs = report.placement_figures(jobs, "2026-01-01T00:00:00Z", "fio-3.33")
    assert figs["readLatencyP99Us"] == pytest.approx(jobs["randread-lat"]["figures"]["read_clat_p99_us"]["median"], abs=1e-3)
    assert figs["fsyncLatencyP99Us"] == pytest.approx(jobs["fdatasync"]["figures"]["sync_lat_p99_us"]["median"], abs=1e-3)
    assert "randReadIOPS" not in figs  # randread-iops did not run here
    assert figs["measuredAt"] == "2026-01-01T00:00:00Z" and figs["fioVersion"] == "fio-3.33"
    bw = {"seqwrite-bw": {"figures": {"write_bw_mib": summarize([100.0])}}}
    assert report.placement_figures(bw, "t")["seqWriteMBps"] == pytest.approx(104.8576, abs=1e-3)


def test_fdatasync_file_fits_beside_the_test_file_BN31() -> None:
    """BN5, BN31: on a 256Mi volume the fdatasync job once ran out of space (its file had the test file's
    size); its own file is now a 32nd of the test file, between 1 MiB and 64 MiB."""
    s = jobmod.Settings(size=jobmod.test_size(256 * MiB, 16 << 30), runtime=1, ramp=0, repeats=1)
    assert s.size == 192 * MiB
    fsync = jobmod.BY_NAME["fdatasync"]
    argv = jobmod.fio_argv(fsync, s, jobmod.target_for(fsync, "/data/stowage-bench/fio.dat"))
    assert "--size=6291456" in argv and f"--size={s.size}" not in argv
    assert jobmod.sync_size(100 << 30) == 64 * MiB and jobmod.sync_size(8 * MiB) == MiB
    # In Block mode the job runs on the device, over the test range.
    block = jobmod.fio_argv(fsync, s, jobmod.target_for(fsync, "/dev/xvdb", block=True))
    assert f"--size={s.size}" in block
    # Every other job keeps the test file's size.
    randwrite = jobmod.fio_argv(jobmod.BY_NAME["randwrite-iops"], s, "/data/stowage-bench/fio.dat")
    assert f"--size={s.size}" in randwrite
