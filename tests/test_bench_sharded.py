"""`gradcheck-suite bench` on sharded records: the Function against autograd, timed in the ranks.

One real run of the command (a subprocess, world size 2) over three correct records of
tests/sharded_bench_models.py: two whose reference on a rank's shards is the rank's own
computation (both sides timed), one whose forward gathers (autograd n/a, with the reason).
The tests assert what the rows hold, never a time."""
import copy
import json
import math
import os
import statistics

import pytest

from gradcheck_suite.bench import regression
from gradcheck_suite.bench.rows import GRID, rows
from gradcheck_suite.bench.timing import PHASES

from .test_bench_cli import bench, write

MODELS = os.path.join(os.path.dirname(__file__), "sharded_bench_models.py")
LOCAL = ("bench_double_copy", "bench_row_scale")
GATHER = "bench_gather_rows"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_sharded")
    code, stdout, err = bench("--models-from", MODELS, "--models", ",".join((*LOCAL, GATHER)), "--quick",
                              "--world-size", "2", "--max-time", "0.3", "--no-plots", "--out", str(out),
                              "--", "--bench-visits=2", "--bench-check-examples=3")
    assert code == 0, stdout[-3000:] + err[-3000:]
    with open(out / "benchmarks.json", encoding="utf-8") as f:
        data = json.load(f)
    return data, (out / "report.md").read_text(encoding="utf-8"), out


def entries(data, model):
    return [b["extra_info"] for b in data["benchmarks"] if b["extra_info"].get("model") == model]


@pytest.mark.parametrize("model", LOCAL)
def test_a_local_record_times_both_sides_in_every_rank(run, model):
    data, _, _ = run
    found = entries(data, model)
    assert {e["phase"] for e in found} == set(PHASES)
    for e in found:
        assert e["world_size"] == 2 and e["autograd_na"] is None
        assert e["samples"]["manual"] and len(e["samples"]["manual"]) == len(e["samples"]["autograd"])
        assert len(e["per_rank"]) == 2 and all(set(r) == {"manual", "autograd"} for r in e["per_rank"])
        assert all(len(r[side]) == len(e["samples"][side]) for r in e["per_rank"] for side in r)
        assert all(t > 0 for t in e["samples"]["manual"] + e["samples"]["autograd"])
        for side in ("manual", "autograd"):      # a round's time is its slowest rank's
            assert all(t == max(r[side][i] for r in e["per_rank"]) for i, t in enumerate(e["samples"][side]))
            assert statistics.median(e["samples"][side]) >= max(statistics.median(r[side]) for r in e["per_rank"])
        assert e["autograd_side"].startswith("autograd of the reference on the rank's shards")
    by = {r.phase: r for r in rows(data) if r.model == model}
    for r in by.values():
        assert r.world_size == 2 and r.key[-1] == 2 and r.na is None
        assert math.isfinite(r.ratio.value) and r.ratio.value > 0
        for side in ("manual", "autograd"):      # pooled over the visits, as the row's own median
            per = r.rank_medians(side)
            assert len(per) == 2 and getattr(r, side).median >= max(per) * (1 - 1e-12)   # numpy's median vs statistics'


def test_the_autograd_side_adds_the_all_reduce_the_placements_need(run):
    data, _, _ = run
    # w is replicated, and its gradient a sum over the ranks' rows: autograd's side all-reduces it; x's is local
    side = entries(data, "bench_row_scale")[0]["autograd_side"]
    assert side.endswith("then an all-reduce of the gradient of w")
    side = entries(data, "bench_double_copy")[0]["autograd_side"]      # Partial() upstream: x's gradient summed
    assert side.endswith("then an all-reduce of the gradient of x")


def test_a_forward_that_communicates_has_no_autograd_side(run):
    data, report, _ = run
    found = entries(data, GATHER)
    assert {e["phase"] for e in found} == set(PHASES)
    for e in found:
        assert e["world_size"] == 2 and "forward communicates" in e["autograd_na"]
        assert e["samples"]["manual"] and "autograd" not in e["samples"]
    row = next(r for r in rows(data) if r.model == GATHER)
    assert row.na and row.faster.startswith("n/a")
    line = next(line for line in report.splitlines() if line.startswith(f"| {GATHER} (2 ranks) | forward+backward"))
    assert "| n/a |" in line and "n/a: the reference on a rank's shards does not give that rank's output" in line
    assert "nan" not in report


def test_the_report_names_the_world_size_and_each_rank(run):
    _, report, _ = run
    assert "## Sharded records, per rank" in report
    for model in LOCAL:
        assert f"| {model} (2 ranks) | backward | pass |" in report
        assert any(line.startswith(f"| {model} | 2 | forward+backward |") for line in report.splitlines())


def test_memory_is_measured_in_every_rank(run):
    data, _, _ = run
    for model in LOCAL:
        mem = next(e["memory"] for e in entries(data, model) if e["visit"] == 0)
        assert len(mem["per_rank"]) == 2 and mem["manual"]["peak"] == max(r["manual"] for r in mem["per_rank"])
        assert "in each rank" in mem["peak_method"]


def test_a_baseline_compares_a_sharded_row_at_the_same_world_size_only(run, tmp_path):
    data, _, _ = run
    now = [r for r in rows(data) if r.table == GRID]
    same = regression.compare(now, rows(data))
    assert {c.row.model for c in same} == set(LOCAL)     # n/a rows have no ratio to gate
    other = copy.deepcopy(data)
    for b in other["benchmarks"]:
        if b["extra_info"].get("world_size") == 2:
            b["extra_info"]["world_size"] = 4
    assert regression.compare(now, rows(other)) == []
    # through the command: the report compares the rows of the same world size, none of another
    here = write(tmp_path, "now.json", data)
    code, stdout, err = bench("--from-json", here, "--out", str(tmp_path / "a"), "--baseline", here, "--no-plots")
    assert code == 0, err
    assert f"{2 * len(LOCAL)} rows compared" in stdout
    code, stdout, err = bench("--from-json", here, "--out", str(tmp_path / "b"), "--baseline",
                              write(tmp_path, "four.json", other), "--no-plots")
    assert code == 0, err
    assert "No row of this run is in the baseline." in stdout


def test_a_world_size_the_record_does_not_run_on_skips_its_rows(tmp_path):
    code, stdout, err = bench("--models-from", MODELS, "--models", "bench_double_copy", "--quick", "--world-size", "3",
                              "--max-time", "0.1", "--no-plots", "--out", str(tmp_path), "--",
                              "--bench-visits=1", "--bench-check-examples=1", "-rs")
    assert "runs on world sizes 2, not 3 (--world-size)" in stdout, stdout[-2000:] + err[-2000:]
    written = tmp_path / "benchmarks.json"      # every row skipped: the command says nothing ran
    assert not written.exists() or not [b for b in json.loads(written.read_text())["benchmarks"]
                                         if b["extra_info"].get("model") == "bench_double_copy"]
