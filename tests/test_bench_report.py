"""The report logic of ``gradcheck-suite bench``, on small fake pytest-benchmark JSON
(no benchmark runs here)."""
import json
import sys

import pytest

from gradcheck_suite import bench


def entry(name, kind, median, **info):
    """One benchmark as pytest-benchmark writes it, with our ``extra_info``."""
    info = {"kind": kind, "device": "cpu", "dtype": "float32", "threads": 2, **info}
    return {"name": name, "fullname": f"benchmarks/x.py::{name}", "extra_info": info,
            "stats": {"median": median, "min": median, "mean": median, "rounds": 5}}


def grid(model, impl, phase, median, flops=None, device="cpu", dtype="float32"):
    return entry(f"test_model[{model}-{impl}-{phase}-{device}-{dtype}]", "grid", median, model=model, impl=impl,
                 phase=phase, device=device, dtype=dtype, dims={"N": 4}, flops=flops)


def matmul(n, median, dtype="float32"):
    return entry(f"test_matmul[cpu-{dtype}-{n}]", "matmul", median, impl="matmul", n=n, dtype=dtype,
                 flops=2 * n ** 3)


def run(*benchmarks, gpu=None):
    return {"machine_info": {"cpu": {"brand_raw": "Test CPU"}, "cpu_count": 2, "gpu": gpu,
                             "torch_version": "2.x", "torch_threads": 2, "python_version": "3.11"},
            "commit_info": {"id": "abc"}, "datetime": "today", "benchmarks": list(benchmarks)}


FB = bench.FORWARD_BACKWARD


def test_records_read_our_fields_and_skip_foreign_benchmarks():
    data = run(grid("m", "manual", FB, 2e-3, flops=10), {"name": "other", "stats": {"median": 1.0}})
    (r,) = bench.records(data)
    assert (r.kind, r.model, r.impl, r.phase, r.device, r.dtype, r.flops, r.median) == \
        ("grid", "m", "manual", FB, "cpu", "float32", 10, 2e-3)


def test_rows_pair_manual_with_autograd_and_compute_ratio_rates_and_fraction():
    recs = bench.records(run(grid("m", "manual", FB, 2e-3, flops=10**6), grid("m", "autograd", FB, 1e-3, flops=10**6),
                             matmul(256, 2 * 256 ** 3 / 1e9)))  # 1 GFLOP/s
    peaks = bench.matmul_peaks(recs)
    assert peaks[("cpu", "float32")] == (pytest.approx(1e9), 256)
    (row,) = bench.grid_rows(recs, peaks)
    assert row.ratio == pytest.approx(2.0)          # manual / autograd: manual is slower
    assert row.rate(row.manual) == pytest.approx(5e8)
    assert row.fraction(row.autograd) == pytest.approx(1.0)


def test_a_model_without_flops_shows_dashes():
    recs = bench.records(run(grid("m", "manual", FB, 2e-3), grid("m", "autograd", FB, 1e-3), matmul(256, 1e-3)))
    (row,) = bench.grid_rows(recs, bench.matmul_peaks(recs))
    line = bench.model_table([row]).splitlines()[-1].split(" | ")
    assert line[6] == "2.00" and line[7:] == ["-"] * 4 + ["- |"]


def test_missing_partner_gives_no_ratio():
    recs = bench.records(run(grid("m", "manual", FB, 2e-3, flops=5)))
    (row,) = bench.grid_rows(recs, {})
    assert row.autograd is None and row.ratio is None and row.fraction(row.manual) is None


def test_matmul_reference_size_is_preferred_and_best_is_the_fallback():
    recs = bench.records(run(matmul(128, 1.0), matmul(256, 1.0), matmul(512, 1.0)))
    assert bench.matmul_peaks(recs)[("cpu", "float32")][1] == 256
    assert bench.matmul_peaks(recs, reference=None)[("cpu", "float32")][1] == 512
    assert bench.matmul_peaks(bench.records(run(matmul(128, 1.0))))[("cpu", "float32")][1] == 128


def test_flop_time_ratio_of_mlp_relu():
    recs = bench.records(run(grid("mlp_relu", "manual", FB, 3e-3, flops=2 * 10**6), matmul(256, 2 * 256 ** 3 / 1e9)))
    # 2 MFLOP at 1 GFLOP/s take 2 ms; it took 3 ms
    assert bench.flop_time_ratio(recs, bench.matmul_peaks(recs)) == pytest.approx(1.5)
    assert bench.flop_time_ratio(recs, {}) is None


def test_regressions_beyond_threshold_only_worst_first():
    base = run(grid("a", "manual", FB, 1.0), grid("b", "manual", FB, 1.0), grid("c", "manual", FB, 1.0),
               grid("gone", "manual", FB, 1.0))
    now = run(grid("a", "manual", FB, 1.05), grid("b", "manual", FB, 1.5), grid("c", "manual", FB, 1.2),
              grid("new", "manual", FB, 9.0))
    changes = bench.compare(now, base)
    assert len(changes) == 3
    assert [c.name.split("[")[1][0] for c in bench.regressions(changes, 10)] == ["b", "c"]
    assert bench.regressions(changes, 60) == []
    assert bench.regressions(changes, 10)[0].percent == pytest.approx(50.0)


def test_formatting():
    assert bench.fmt_time(1.5e-3) == "1.5 ms" and bench.fmt_time(2.5e-6) == "2.5 µs" and bench.fmt_time(None) == "-"
    assert bench.fmt_count(26_000_000) == "26 M" and bench.fmt_count(45) == "45"
    assert bench.fmt_percent(0.5) == "50%" and bench.fmt_percent(0.0123) == "1.2%"


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_main_from_json_writes_report_and_fails_on_regression(tmp_path, capsys):
    base = write(tmp_path, "base.json", run(grid("mlp_relu", "manual", FB, 1e-3, flops=10**6)))
    now = write(tmp_path, "now.json", run(grid("mlp_relu", "manual", FB, 2e-3, flops=10**6),
                                          grid("mlp_relu", "autograd", FB, 1e-3, flops=10**6), matmul(256, 1e-3)))
    out = tmp_path / "out"
    args = ["--from-json", now, "--out", str(out), "--baseline", base, "--no-plots"]
    assert bench.main(args) == 0
    text = (out / "report.md").read_text()
    assert "| mlp_relu | cpu | float32 | forward+backward | 2 ms | 1 ms | 2.00 |" in text
    assert "+100.0%" in text and "FLOP-time ratio" in text and "CUDA not available" in text
    assert "| mlp_relu | cpu | float32 |" in capsys.readouterr().out   # the table goes to stdout too
    assert bench.main(args + ["--fail-on-regression"]) == 1
    assert bench.main(args + ["--fail-on-regression", "--threshold", "150"]) == 0


def test_plots_skipped_without_matplotlib(tmp_path, monkeypatch):
    sweep = [entry(f"s{i}", "sweep", 1e-3 * f, model="mlp_relu", impl=impl, phase=FB, dims={"N": f}, flops=10**6 * f,
                   factor=f) for i, (impl, f) in enumerate([("manual", 1), ("manual", 2), ("autograd", 1)])]
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    text, _ = bench.report(run(*sweep), tmp_path)
    assert "plots skipped: matplotlib not installed" in text
    assert "| mlp_relu | 1 | N=1 |" in text


@pytest.mark.parametrize("case", ["missing baseline", "bad json", "not a benchmark file", "unwritable out"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    good = write(tmp_path, "good.json", run())
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    argv = {"missing baseline": ["--baseline", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")],
            "bad json": ["--baseline", _raw(tmp_path, "bad.json", "{not json"), "--out", str(tmp_path / "o")],
            "not a benchmark file": ["--baseline", write(tmp_path, "list.json", [1]), "--out", str(tmp_path / "o")],
            "unwritable out": ["--from-json", good, "--out", str(blocker / "sub")]}[case]
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and err.startswith("gradcheck-suite bench:")


def _raw(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_quick_pytest_command_line(tmp_path):
    args = bench.pytest_args(tmp_path, tmp_path / "b.json", quick=True, max_time=None, extra=["-k", "mlp"])
    assert args[0] == str(tmp_path) and f"--benchmark-json={tmp_path / 'b.json'}" in args
    assert "--bench-quick" in args and "--benchmark-max-time=0.02" in args and args[-2:] == ["-k", "mlp"]


@pytest.mark.parametrize("name", ["scalar_linear", "linear_layer"])
def test_timed_regions_compute_the_same_gradients(name):
    # not a benchmark: each region runs twice, and all four agree with each other
    import torch

    from gradcheck_suite.registry import load

    model = load().get(name)
    dims = bench.scaled_dims(model, 0.05)
    results = []
    for impl in bench.IMPLS:
        for phase in bench.PHASES:
            reg = bench.region(model, dims, impl, phase, "cpu", "float64")
            assert reg.info["impl"] == impl and reg.grad_enabled == (impl == "autograd")
            with torch.set_grad_enabled(reg.grad_enabled):
                reg.run()
                out = reg.run()  # the autograd backward alone reuses its graph
            results.append([out[n] for n in model.differentiable] if impl == "manual" else list(out))
    for grads in results[1:]:
        for a, b in zip(grads, results[0]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_running_without_pytest_benchmark_is_a_message_not_a_traceback(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pytest_benchmark", None)  # makes its import fail
    assert bench.main(["--out", str(tmp_path / "r"), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "pytest_benchmark is not installed" in err and "Traceback" not in err
