"""The logic of `gradcheck-suite bench` on synthetic runs: statistics, the regression
gate, the report's contents.  Nothing is timed here; the command line is in
test_bench_cli.py."""
import dataclasses
import sys

import numpy as np
import pytest

from gradcheck_suite.bench import markdown, regression, rows, stats, timing
from gradcheck_suite.verdict import rules

FB, BW = timing.FORWARD_BACKWARD, timing.BACKWARD


def rounds(ratio, n=40, spread=0.05, autograd=1e-3, seed=0):
    """n paired rounds whose manual/autograd ratio scatters around ``ratio``."""
    rng = np.random.default_rng(seed)
    a = autograd * (1 + rng.uniform(0, 3, n))          # absolute times swing by up to 4x
    m = a * ratio * (1 + rng.normal(0, spread, n))
    return {"manual": m.tolist(), "autograd": a.tolist()}


def entry(model, samples, *, phase=FB, table="grid", visit=0, verdict="pass", flops=None, matmul=None, factor=None,
          reproduce=None, memory=None):
    """One benchmark as pytest-benchmark writes it, with this suite's extra_info."""
    info = {"table": table, "model": model, "phase": phase, "device": "cpu", "dtype": "float32", "dims": {"N": 4},
            "flops": flops, "threads": 1, "visit": visit, "samples": samples, "matmul": matmul, "factor": factor,
            "check": {"verdict": verdict, "source": "quick check, 5 cases", "reproduce": reproduce}, "memory": memory}
    return {"name": f"test_model[visit{visit}-{model}-{phase}]", "extra_info": info,
            "stats": {"median": 1.0, "min": 1.0, "rounds": len(samples["manual"])}}


def run(*benchmarks, node="box", threads=1):
    return {"machine_info": {"node": node, "cpu": {"brand_raw": "Test CPU"}, "cpu_count": 2, "gpu": None,
                             "torch_version": "2.x", "torch_threads": threads, "quick": True,
                             "load_average": {"start": 0.5, "end": 0.7}, "other_cores": 0.02},
            "commit_info": {"id": "abc"}, "datetime": "today", "benchmarks": list(benchmarks)}


def visits(model, ratios, **kw):
    return [entry(model, rounds(r, seed=i), visit=i, **kw) for i, r in enumerate(ratios)]


def table_line(text, model):
    """The row of ``model`` in the report's main table (the one a reader decides from)."""
    main = text.split("## Details")[0]
    return next(ln for ln in main.splitlines() if ln.startswith(f"| {model} "))


def detail_line(text, model):
    return next(ln for ln in text.split("## Details")[1].splitlines() if ln.startswith(f"| {model} "))


# --------------------------------------------------------------------------- statistics

def test_interval_contains_the_median_and_narrows_with_more_rounds():
    few = stats.median_interval(rounds(0.5, n=10)["manual"])
    many = stats.median_interval(rounds(0.5, n=400)["manual"])
    assert few.low <= few.value <= few.high and many.low <= many.value <= many.high
    assert many.high - many.low < few.high - few.low


def test_drift_between_visits_widens_the_interval():
    rng = np.random.default_rng(1)
    steady = [list(1.0 + rng.normal(0, 0.02, 30)) for _ in range(3)]
    drifting = [list(level + rng.normal(0, 0.02, 30)) for level in (0.85, 1.0, 1.15)]
    pooled = stats.median_interval([x for g in drifting for x in g])     # as if one visit
    grouped = stats.median_interval(drifting)
    assert grouped.high - grouped.low > 3 * (pooled.high - pooled.low)
    tight = stats.median_interval(steady)
    assert tight.high - tight.low < 0.05


def test_the_advantage_of_running_second_cancels_over_a_rotation():
    # the order rotates each round (manual first, then autograd first); whichever runs
    # second is 15% faster, its cache warm.  Per round the ratio is 0.87 or 1.15 around
    # the true 1.0, and a median of such a mixture lands on either; per rotation it is 1.0.
    manual, autograd = [], []
    for k in range(40):
        first = "manual" if k % 2 == 0 else "autograd"
        manual.append(1e-4 * (1.0 if first == "manual" else 0.85))
        autograd.append(1e-4 * (1.0 if first == "autograd" else 0.85))
    samples = {"manual": manual, "autograd": autograd}
    per_round = [m / a for m, a in zip(manual, autograd)]
    assert sorted({round(r, 2) for r in per_round}) == [0.85, 1.18]
    assert rows.paired_ratios(samples) == pytest.approx([1.0] * 20)
    (r,) = rows.rows(run(entry("m", samples)))
    assert r.ratio.value == pytest.approx(1.0) and r.rounds == 40
    # with the matmul as a third side, a rotation is three rounds
    three = {**samples, "matmul": [1e-4] * 40}
    assert len(rows.paired_ratios(three)) == 13


def test_summary_quartiles():
    s = stats.summary([1, 2, 3, 4, 5])
    assert (s.q1, s.median, s.q3, s.n) == (2, 3, 4, 5) and s.iqr == 2
    with pytest.raises(ValueError):
        stats.summary([])


# --------------------------------------------------------------------------- the gate

@pytest.mark.parametrize("low,high,status", [
    (1.15, 1.30, regression.SLOWER),          # wholly above +10%
    (1.05, 1.30, regression.UNCLEAR),         # a median of +17% is not enough
    (0.95, 1.08, regression.SAME),
    (0.70, 0.88, regression.FASTER),          # wholly below 1/1.1
    (0.85, 0.95, regression.UNCLEAR),
])
def test_judge_flags_only_intervals_wholly_beyond_the_threshold(low, high, status):
    assert regression.judge(stats.Interval((low + high) / 2, low, high), 10) == status


NINE = rules.MIN_VISITS      # visits enough for a verdict


def gate(current_ratios, baseline_ratios, threshold=10):
    cur = rows.rows(run(*visits("m", current_ratios)))
    base = rows.rows(run(*visits("m", baseline_ratios)))
    (c,) = regression.compare(cur, base, threshold)
    return c


def test_same_ratio_with_swinging_absolute_times_is_not_flagged():
    c = gate([0.5] * NINE, [0.5] * NINE)
    assert c.status == regression.SAME and abs(c.percent) < 3


def test_a_real_slowdown_is_flagged():
    c = gate([0.6] * NINE, [0.5] * NINE)       # +20%
    assert c.status == regression.SLOWER and c.change.low > 1.1
    assert regression.regressions([c]) == [c]
    assert gate([0.6] * NINE, [0.5] * NINE, threshold=50).status != regression.SLOWER


def test_a_median_past_the_threshold_with_drifting_visits_is_not_flagged():
    # the current run's visits disagree with each other: +25% in the median, but no evidence
    c = gate([0.45, 0.62, 0.8] * 3, [0.5] * NINE)
    assert c.percent > 10 and c.status == regression.UNCLEAR


def test_a_ratio_that_the_machines_speed_explains_is_contradicted_on_the_same_machine():
    # the machine ran twice as fast (autograd 0.5x in every row); in the tiny row the
    # manual path gained more than that, so its ratio rose with no change to the code
    then = {"big": ([2e-3] * 9, [4e-3] * 9), "big2": ([3e-3] * 9, [4e-3] * 9), "big3": ([1e-3] * 9, [4e-3] * 9),
            "tiny": ([2e-5] * 9, [8e-5] * 9)}
    now = {"big": ([1e-3] * 9, [2e-3] * 9), "big2": ([1.5e-3] * 9, [2e-3] * 9), "big3": ([0.5e-3] * 9, [2e-3] * 9),
           "tiny": ([0.9e-5] * 9, [2.7e-5] * 9)}                                    # tiny: 0.25 -> 0.33

    def as_rows(d):
        return rows.rows(run(*(entry(m, {"manual": a, "autograd": b}, visit=v) for m, (a, b) in d.items()
                               for v in range(NINE))))
    by_model = {c.row.model: c for c in regression.compare(as_rows(now), as_rows(then), same=True)}
    assert by_model["tiny"].status == regression.CONTRADICTED and by_model["big"].status == regression.SAME
    assert regression.regressions(by_model.values()) == []
    across = {c.row.model: c for c in regression.compare(as_rows(now), as_rows(then), same=False)}
    assert across["tiny"].status == regression.SLOWER          # across machines only the ratio counts
    # a real slowdown on a machine that got faster: the manual time fell less than the machine's
    now["big"] = ([1.4e-3] * 9, [2e-3] * 9)
    by_model = {c.row.model: c for c in regression.compare(as_rows(now), as_rows(then), same=True)}
    assert by_model["big"].status == regression.SLOWER


def test_rows_are_matched_by_model_device_dtype_and_phase_and_sweeps_are_not_gated():
    base = rows.rows(run(*visits("a", [0.5] * NINE), entry("gone", rounds(0.5)),
                         entry("a", rounds(0.5), table="sweep", factor=0.5)))
    now = rows.rows(run(*visits("a", [0.9] * NINE), entry("new", rounds(0.5)),
                        entry("a", rounds(5.0), table="sweep", factor=0.5)))
    (c,) = regression.compare(now, base)
    assert c.row.model == "a" and c.status == regression.SLOWER


def drifting_visit(rng, ratio, noise, n=60, drift=0.015):
    """One visit's rounds: the whole visit drifts by ``drift`` (the machine's state), each
    round scatters by ``noise`` around it."""
    level = ratio * (1 + rng.normal(0, drift))
    a = 1e-4 * (1 + rng.uniform(0, 3, n))
    m = a * level * (1 + rng.normal(0, noise, n))
    return {"manual": m.tolist(), "autograd": a.tolist()}


REGULAR = rules.QUICK_VISITS
QUICK = regression.Plan(rows=1, visits=REGULAR, looks=rules.EXTRA_LOOKS, per_look=rules.VISITS_PER_LOOK)


def sequential(rng, base, ratio, noise, threshold=5.0, plan=QUICK, drift=0.015):
    """What the run does with a row: its regular visits, then batches of extra ones while
    it is undecided, a look after each batch."""
    visits = [drifting_visit(rng, ratio, noise, drift=drift) for _ in range(plan.visits)]
    index = 0
    while (status := regression.look(visits, base, threshold, plan)) == regression.UNCLEAR and index < plan.looks:
        visits += [drifting_visit(rng, ratio, noise, drift=drift) for _ in range(plan.per_look)]
        index += 1
    return status, visits


def test_extra_visits_decide_a_10pct_slowdown_that_the_regular_visits_leave_undecided():
    # a well-measured baseline (9 visits), and a run on a noisier machine that is 10% slower
    rng = np.random.default_rng(11)
    (base,) = rows.rows(run(*(entry("m", drifting_visit(rng, 0.5, 0.1), visit=i) for i in range(9))))
    state = rng.bit_generator.state
    fixed = [drifting_visit(rng, 0.55, 0.25) for _ in range(REGULAR)]
    assert regression.look(fixed, base, 5.0, QUICK) == regression.UNCLEAR      # six visits never flag
    rng.bit_generator.state = state                                     # the same regular visits, then more
    status, visits = sequential(rng, base, 0.55, 0.25)
    assert status == regression.SLOWER and REGULAR < len(visits) <= REGULAR + rules.EXTRA_VISITS
    assert visits[:REGULAR] == fixed
    # the report judges the finished run as the run decided it
    data = run(*(entry("m", v, visit=i) for i, v in enumerate(visits)))
    (c,) = regression.compare(rows.rows(data), [base], 5.0, plan=QUICK)
    assert c.status == regression.SLOWER and c.visits == len(visits)


def test_a_wide_interval_after_few_visits_is_never_a_verdict():
    # the report that cried wolf: +44.2% [+9.7%, +106.0%] after six visits
    wolf = stats.Interval(1.442, 1.097, 2.060)
    assert regression.judge(wolf, 5.0) == regression.UNCLEAR                  # wider than MAX_SPREAD, at any visits
    assert regression.judge(wolf, 5.0, visits=40) == regression.UNCLEAR
    narrow = stats.Interval(1.20, 1.12, 1.30)
    assert regression.judge(narrow, 5.0, visits=REGULAR) == regression.UNCLEAR      # too few visits to flag
    assert regression.judge(narrow, 5.0, visits=rules.MIN_VISITS) == regression.SLOWER
    assert regression.judge(stats.Interval(1.0, 0.99, 1.01), 5.0, visits=2) == regression.SAME   # "no change" may stop early
    # the real path: six visits all 44% above the baseline's, on a noisy machine, in a report of 18 rows
    rng = np.random.default_rng(5)
    (base,) = rows.rows(run(*(entry("m", drifting_visit(rng, 0.5, 0.1, drift=0.2), visit=i) for i in range(6))))
    noisy = [drifting_visit(rng, 0.72, 0.1, drift=0.2) for _ in range(REGULAR)]
    assert regression.look(noisy, base, 5.0, dataclasses.replace(QUICK, rows=18)) == regression.UNCLEAR
    # with six visits on each side no interval exists at the per-row level of 18 rows and 3 looks
    c = regression.change([paired_ratios for paired_ratios in (rows.paired_ratios(v) for v in noisy)], base.ratios,
                       dataclasses.replace(QUICK, rows=18))
    assert c.low == 0 and c.high == float("inf")


def test_the_per_row_level_shrinks_with_the_number_of_rows_and_looks():
    one, many = regression.Plan(rows=1), regression.Plan(rows=18)
    assert one.tail == pytest.approx(rules.FALSE_FLAG_RATE)
    assert many.tail == pytest.approx(rules.FALSE_FLAG_RATE / 18)
    assert QUICK.flagging_looks == 3                  # after 9, 12 and 15 visits; the look after 6 cannot flag
    assert dataclasses.replace(QUICK, rows=18).tail == pytest.approx(rules.FALSE_FLAG_RATE / 54)
    full = regression.Plan(rows=36, visits=3, looks=3, per_look=3)          # looks after 3, 6, 9, 12 visits
    assert full.flagging_looks == 2 and full.tail == pytest.approx(rules.FALSE_FLAG_RATE / 72)
    # the same visits give a wider interval in a larger report
    rng = np.random.default_rng(3)
    now = [rows.paired_ratios(drifting_visit(rng, 0.55, 0.1)) for _ in range(15)]
    then = [rows.paired_ratios(drifting_visit(rng, 0.5, 0.1)) for _ in range(9)]
    small, large = regression.change(now, then, one), regression.change(now, then, dataclasses.replace(QUICK, rows=18))
    assert large.low < small.low and large.high > small.high and large.value == small.value


def test_the_exact_interval_holds_its_level_for_heavy_tailed_visits():
    # the published critical values of the Mann-Whitney test, two-sided 5%
    assert stats.rank_sum_depth(6, 6, 0.025) == 6 and stats.rank_sum_depth(10, 10, 0.025) == 24
    assert stats.rank_sum_depth(3, 3, 0.025) == 0                   # too few for 95%: no interval at all
    assert sum(stats.rank_sum_counts(5, 7)) == 792                   # C(12, 5) orderings
    # no change, visits with a heavy tail (a stalled visit now and then): each tail excludes
    # the truth at most ``tail`` of the time
    rng = np.random.default_rng(0)
    tail, missed_low, missed_high, trials = 0.025, 0, 0, 2000
    for _ in range(trials):
        now = np.exp(0.03 * rng.standard_t(2, 12))
        then = np.exp(0.03 * rng.standard_t(2, 6))
        iv = stats.shift_interval([[x] for x in now], [[x] for x in then], tail)
        missed_low += iv.low > 1
        missed_high += iv.high < 1
    assert missed_low / trials <= tail + 0.01 and missed_high / trials <= tail + 0.01


def same_code_runs(plan, runs, threshold, report_rows=18, seed=42):
    """How many of ``runs`` same-code reports of ``report_rows`` rows flag any row: each
    visit drifts by 3% and scatters by 10% a round, the sequential rule as the run applies it."""
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(runs):
        flags = 0
        for _ in range(report_rows):
            (base,) = rows.rows(run(*(entry("m", drifting_visit(rng, 0.5, 0.1, n=30, drift=0.03), visit=i)
                                      for i in range(REGULAR))))
            status, _ = sequential(rng, base, 0.5, 0.1, threshold, plan=plan, drift=0.03)
            flags += status in (regression.SLOWER, regression.FASTER)
        flagged += flags > 0
    return flagged


def test_the_false_flag_rate_holds_over_the_whole_report_not_per_row():
    # at threshold 0 every flag is the statistics' own error: a report of 18 rows stays
    # within the report-wide rate (at most 5% each way: 4 runs of 40), where the whole
    # rate given to every row flags a good part of the runs
    assert same_code_runs(dataclasses.replace(QUICK, rows=18), 40, threshold=0.0) <= 4
    assert same_code_runs(dataclasses.replace(QUICK, rows=1), 40, threshold=0.0) >= 8


def test_a_real_slowdown_is_found_in_a_report_of_many_rows():
    plan = dataclasses.replace(QUICK, rows=18)
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(10):
        (base,) = rows.rows(run(*(entry("m", drifting_visit(rng, 0.5, 0.1, n=30, drift=0.03), visit=i)
                                  for i in range(REGULAR))))
        found += sequential(rng, base, 0.6, 0.1, plan=plan, drift=0.03)[0] == regression.SLOWER      # +20%
    assert found >= 8


@pytest.mark.parametrize("text", ["nan", "NaN", "-1", "-0.5", "abc", "", "inf", "1e999"])
def test_threshold_rejects_what_is_not_a_finite_percentage(text):
    with pytest.raises(ValueError, match="--threshold"):
        regression.threshold(text)


@pytest.mark.parametrize("text,value", [("0", 0.0), ("10", 10.0), ("12.5", 12.5)])
def test_threshold_accepts_percentages(text, value):
    assert regression.threshold(text) == value


def test_another_machine_is_recorded():
    assert regression.same_machine(run(), run())
    assert not regression.same_machine(run(), run(node="ci-runner-7"))
    assert not regression.same_machine(run(), run(threads=2))


# --------------------------------------------------------------------------- rows

def test_a_run_written_with_the_old_key_kind_is_still_read():
    old = [entry("m", rounds(0.5, seed=k), visit=k) for k in range(2)] + [entry("m", rounds(0.5), table="sweep",
                                                                                  factor=0.5)]
    for e in old:
        e["extra_info"]["kind"] = e["extra_info"].pop("table")
    assert sorted((r.table, r.factor, len(r.visits)) for r in rows.rows(run(*old))) == [("grid", None, 2),
                                                                                        ("sweep", 0.5, 1)]


def test_visits_to_one_row_are_merged_and_foreign_benchmarks_left_out():
    data = run(*visits("m", [0.5, 0.5, 0.5]), {"name": "other", "stats": {"median": 1.0}},
               {"name": "old", "extra_info": {"kind": "grid"}, "stats": {"median": 1.0}})
    (r,) = rows.rows(data)
    assert len(r.visits) == 3 and r.rounds == 120
    assert r.ratio.value == pytest.approx(0.5, rel=0.03)
    assert r.manual.median < r.autograd.median


def test_matmul_fraction_uses_the_rounds_own_matmul():
    # the machine slows down 4x half-way: each round's matmul slows with it, the fraction holds
    slow = [1, 1, 1, 4, 4, 4]
    samples = {"manual": [2e-3 * k for k in slow], "autograd": [1e-3 * k for k in slow],
               "matmul": [1e-3 * k for k in slow]}
    (r,) = rows.rows(run(entry("m", samples, flops=10**6, matmul={"shape": [10, 10, 10], "flops": 10**6})))
    assert r.fraction("manual") == pytest.approx(0.5) and r.fraction("autograd") == pytest.approx(1.0)
    (unpaired,) = rows.rows(run(entry("m", samples, flops=10**6)))
    assert unpaired.fraction("manual") is None


# --------------------------------------------------------------------------- report

def test_a_failing_check_is_marked_and_never_a_winner(tmp_path):
    cmd = "gradcheck-suite check mlp_no_mask --models-from wrong.py --seed 0"
    data = run(entry("mlp_no_mask", rounds(0.13), verdict="fail", reproduce=cmd), entry("good", rounds(0.13)))
    r_bad, r_good = rows.rows(data)
    assert r_bad.faster == "none: check fail" and r_good.faster == "manual"
    text, _ = markdown.report(data, tmp_path, plots=False)
    line = table_line(text, "mlp_no_mask")
    assert "**FAIL**" in line and "none: check fail" in line and "| manual |" not in line
    assert "never called faster" in text and cmd in text


def test_an_unchecked_row_is_never_a_winner():
    (r,) = rows.rows(run(entry("m", rounds(0.2), verdict="not checked")))
    assert r.faster == "none: check not checked"


def test_a_row_above_the_matmul_rate_carries_a_note(tmp_path):
    fast = {"manual": [1e-4] * 9, "autograd": [1e-3] * 9, "matmul": [1e-3] * 9}
    data = run(entry("m", fast, flops=10**6, matmul={"shape": [1, 4, 1], "flops": 10**6}))
    text, _ = markdown.report(data, tmp_path, plots=False)
    assert "1000% (note 1)" in text and "1. m cpu float32 forward+backward, manual: 1000% of the matmul rate" in text
    line = detail_line(text, "m")
    assert "100% |" in line                       # autograd exactly at the rate: no note


def test_report_shows_spread_interval_threads_and_load(tmp_path):
    text, _ = markdown.report(run(*visits("m", [0.5, 0.5])), tmp_path, plots=False)
    assert "1 torch thread(s)" in text and "load average 0.50 at the start" in text
    head = next(ln for ln in text.splitlines() if ln.startswith("| model | phase |"))
    assert [c.strip() for c in head.strip("|").split("|")] == [
        "model", "phase", "check", "manual", "autograd", "manual/autograd [95% CI]", "faster",
        "kept: manual / autograd", "peak: manual / autograd"]
    cells = [c.strip() for c in table_line(text, "m").split("|")]
    assert cells[6].startswith("0.5") and "[" in cells[6]      # ratio [CI]
    details = [c.strip() for c in detail_line(text, "m").split("|")]
    assert "(" in details[4] and "–" in details[4]             # median (q1–q3)
    assert details[6] == "80 in 2" and details[2] == "cpu float32"


def sweep_run():
    grid = entry("mlp_relu", rounds(0.7), flops=4000)
    sweep = [entry("mlp_relu", rounds(0.5 + f / 10, seed=k), table="sweep", factor=f, flops=int(4000 * f ** 3))
             for k, f in enumerate((0.25, 0.5))]
    return run(grid, *sweep)


def test_the_sweep_at_factor_one_is_the_grid_row(tmp_path):
    series = markdown.sweep_series(rows.rows(sweep_run()))
    assert [r.factor for r in series["mlp_relu"]] == [0.25, 0.5, 1.0]
    (grid,) = [r for r in rows.rows(sweep_run()) if r.table == "grid"]
    assert series["mlp_relu"][-1].ratio == grid.ratio
    text, _ = markdown.report(sweep_run(), tmp_path, plots=False)
    assert "| mlp_relu | 1 (grid row) |" in text


def test_the_plot_has_one_panel_per_model(tmp_path):
    pytest.importorskip("matplotlib")
    text, _ = markdown.report(sweep_run(), tmp_path)
    assert "Plot: [sweep.png](sweep.png)" in text and (tmp_path / "sweep.png").stat().st_size > 1000


def test_plots_skipped_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text, _ = markdown.report(sweep_run(), tmp_path)
    assert "plots skipped: matplotlib not installed" in text and not (tmp_path / "sweep.png").exists()


def test_baseline_section_same_machine_and_another(tmp_path):
    base = run(*visits("m", [0.5] * NINE))
    text, regressed = markdown.report(run(*visits("m", [0.8] * NINE)), tmp_path, base, plots=False)
    assert "Same machine and setup." in text and "manual time then → now" in text
    assert [c.row.model for c in regressed.slower] == ["m"] and "**slower**" in text and not regressed.memory
    text, _ = markdown.report(run(*visits("m", [0.5] * NINE), node="other"), tmp_path, base, plots=False)
    assert "another machine or setup: only manual/autograd ratios are compared" in text
    assert "manual time then → now" not in text and "0 slower" in text
    assert "the machine ran at another speed" not in text
    slow_machine = run(entry("m", {"manual": [2e-3] * 9, "autograd": [4e-3] * 9}))
    text, _ = markdown.report(slow_machine, tmp_path, run(entry("m", {"manual": [1e-3] * 9, "autograd": [2e-3] * 9})),
                            plots=False)
    assert "Autograd took 2.00× the baseline's time" in text and "within threshold" in text


# --------------------------------------------------------------------------- timing

def test_interleaved_rounds_alternate_the_order_of_the_sides():
    log = []
    sides = {name: timing.Region(lambda name=name: log.append(name), False, None, {}) for name in "ab"}
    t = timing.Interleaved(sides, block_seconds=0.0, warmup=0)
    log.clear()
    for _ in range(4):
        t.round()
    assert log == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(t.samples["a"]) == len(t.samples["b"]) == 4 and len(t.ratios("a", "b")) == 4


def test_a_stalled_sizing_round_does_not_shrink_the_visit():
    clock, calls = [0.0], [0]

    def tick():
        calls[0] += 1
        clock[0] += 0.125 if calls[0] != 5 else 10.0       # a call of the first sizing round stalls 10 s

    t = timing.Interleaved({"a": timing.Region(tick, False, None, {})}, block_seconds=0.5, warmup=1,
                           timer=lambda: clock[0])
    assert t.round_seconds == 0.5                     # the fastest sizing round, not the stalled one
    assert t.rounds_for(1.0, 1, 100) == 2


def test_interleaved_blocks_last_about_the_block_time():
    clock = [0.0]

    def tick():
        clock[0] += 0.125                       # each call takes 1/8 s on the fake clock

    t = timing.Interleaved({"a": timing.Region(tick, False, None, {})}, block_seconds=0.5, warmup=1,
                           timer=lambda: clock[0])
    assert t.calls["a"] == 4 and t.round_seconds == 0.5
    assert t.rounds_for(100, 1, 10_000) == 200 and t.rounds_for(100, 1, 50) == 50 and t.rounds_for(0.1, 3, 50) == 3
    t.round()
    assert t.samples["a"] == [0.125]


@pytest.mark.parametrize("name, source", [("scalar_linear", None), ("linear_layer", None),
                                          ("conv1d_strided", "examples/conv1d.py"),         # derived dims, hyper
                                          ("legendre_p3", "examples/legendre_p3.py"),       # an autograd.Function
                                          ("scaled_softplus", "examples/custom_op_softplus.py")])   # a custom op
def test_timed_regions_compute_the_same_gradients(name, source):
    # not a benchmark: each region runs twice, and all four agree with each other
    import pathlib

    import torch

    from gradcheck_suite import load

    root = pathlib.Path(__file__).resolve().parent.parent
    model = load([str(root / source)] if source else []).get(name)
    dims = timing.scaled_dims(model, 0.05)
    results = []
    for impl in timing.IMPLS:
        for phase in timing.PHASES:
            reg = timing.region(model, dims, impl, phase, "cpu", "float64")
            assert reg.info["impl"] == impl and reg.grad_enabled == (impl == "autograd")
            with torch.set_grad_enabled(reg.grad_enabled):
                reg.run()
                out = reg.run()  # the autograd backward alone reuses its graph
            results.append([out[n] for n in model.differentiable] if impl == "manual" else list(out))
    for grads in results[1:]:
        for a, b in zip(grads, results[0]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_matmul_shape_follows_the_models_largest_dims():
    from gradcheck_suite.bench import calibration

    assert calibration.matmul_shape({"N": 64, "D_in": 1000, "H": 100, "D_out": 10}) == (64, 1000, 100)
    assert calibration.matmul_shape({"N": 4}) == (1, 4, 1)
    reg = calibration.matmul_region((2, 3, 4))
    assert tuple(reg.run().shape) == (2, 4) and reg.flops == 48


def test_formatting():
    assert markdown.fmt_time(1.5e-3) == "1.5 ms" and markdown.fmt_time(2.5e-6) == "2.5 µs" and markdown.fmt_time(None) == "-"
    assert markdown.fmt_count(26_000_000) == "26 M" and markdown.fmt_count(45) == "45"
    assert markdown.fmt_percent(0.5) == "50%" and markdown.fmt_percent(0.0123) == "1.2%"
    assert markdown.fmt_interval(stats.Interval(0.5, 0.45, 0.55)) == "0.50 [0.45, 0.55]"


def test_row_key_ignores_the_visit():
    a, b = (rows.rows(run(e))[0] for e in visits("m", [0.5, 0.5]))
    assert a.key == b.key and dataclasses.replace(a, factor=2.0).key != a.key


# --------------------------------------------------------------------------- memory

def mem(kept, peak, a_kept=1000, a_peak=4000):
    return {"manual": {"kept": kept, "peak": peak}, "autograd": {"kept": a_kept, "peak": a_peak},
            "peak_method": "test", "approximate_peak": False}


def test_a_backward_that_keeps_less_is_called_out_and_both_figures_are_in_the_table(tmp_path):
    data = run(entry("lean", rounds(0.5), memory=mem(250, 3000)), entry("lean", rounds(0.5), phase=BW),
               entry("fat", rounds(0.5), memory=mem(2000, 9000)))
    text, _ = markdown.report(data, tmp_path, plots=False)
    assert "- lean (cpu float32) keeps 0.25× autograd's saved bytes (250 B against 1000 B)." in text
    assert "fat (cpu float32) keeps" not in text
    cells = [c.strip() for c in table_line(text, "fat").split("|")]
    assert cells[8] == "1.95 KiB / 1000 B (2.00×)" and cells[9] == "8.79 KiB / 3.91 KiB (2.25×)"


@pytest.mark.parametrize("now,grew", [(mem(1000, 4000), ()), (mem(1001, 4000), ("kept",)), (mem(900, 4100), ("peak",)),
                                      (mem(1200, 5000), ("kept", "peak"))])
def test_any_growth_of_kept_or_peak_bytes_is_a_memory_regression(tmp_path, now, grew):
    base = run(entry("m", rounds(0.5), memory=mem(1000, 4000)))
    current = run(entry("m", rounds(0.5), memory=now))
    (c,) = regression.memory_changes(rows.rows(current), rows.rows(base))
    assert c.grew == grew
    text, gate = markdown.report(current, tmp_path, base, plots=False)
    assert bool(gate.memory) == bool(grew) and ("**memory regression**" in text) == bool(grew)
    # a threshold lets growth within it pass
    assert regression.memory_changes(rows.rows(current), rows.rows(base), 30.0)[0].grew == ()


def test_rows_without_memory_in_the_baseline_are_not_memory_gated():
    base = run(entry("m", rounds(0.5)))
    assert regression.memory_changes(rows.rows(run(entry("m", rounds(0.5), memory=mem(1, 1)))), rows.rows(base)) == []


def test_the_peak_is_gated_only_against_a_baseline_of_the_same_torch_cpu_and_threads(tmp_path):
    base = run(entry("m", rounds(0.5), memory=mem(1000, 4000)))
    current = run(entry("m", rounds(0.5), memory=mem(1000, 5000)), node="another-runner")
    text, gate = markdown.report(current, tmp_path, base, plots=False)
    assert [c.grew for c in gate.memory] == [("peak",)]                 # another host, the same build: gated
    other = run(entry("m", rounds(0.5), memory=mem(1000, 5000)), threads=2)
    text, gate = markdown.report(other, tmp_path, base, plots=False)
    assert not gate.memory and "shown but not gated" in text and "(not gated)" in text
    kept = run(entry("m", rounds(0.5), memory=mem(2000, 5000)), threads=2)
    assert [c.grew for c in markdown.report(kept, tmp_path, base, plots=False)[1].memory] == [("kept",)]
