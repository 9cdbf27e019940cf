"""`gradcheck-suite bench` as a user runs it: a real subprocess each time."""
import json
import os
import subprocess
import sys

import pytest

from .test_bench_report import entry, rounds, run, table_line, visits
from .test_cli import WRONG   # examples/wrong.py: mlp_relu without the ReLU mask


def clean_env(**extra):
    """The environment of a user's shell: under pytest-xdist the worker's variables would
    tell the bench's own pytest session that it is a worker, and pytest-benchmark would
    switch itself off."""
    return {k: v for k, v in {**os.environ, **extra}.items() if not k.startswith("PYTEST_XDIST")}


def bench(*args, env=None, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "gradcheck_suite", "bench", *args], capture_output=True, text=True,
                          env=clean_env(**(env or {})), cwd=cwd, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def one_line_error(code, err, wanted):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("gradcheck-suite bench: error:") and wanted in err, err


@pytest.mark.parametrize("value,wanted", [("nan", "finite"), ("-5", "at least 0"), ("ten", "not a number"),
                                          ("inf", "finite")])
def test_bad_threshold_is_one_line_and_exit_2(tmp_path, value, wanted):
    now = write(tmp_path, "now.json", run(entry("m", rounds(0.5))))
    code, _, err = bench("--from-json", now, "--out", str(tmp_path / "o"), "--threshold", value)
    one_line_error(code, err, wanted)


@pytest.mark.parametrize("value,wanted", [("-1", "at least 0"), ("lots", "not a number")])
def test_bad_memory_threshold_is_one_line_and_exit_2(tmp_path, value, wanted):
    now = write(tmp_path, "now.json", run(entry("m", rounds(0.5))))
    code, _, err = bench("--from-json", now, "--out", str(tmp_path / "o"), "--memory-threshold", value)
    one_line_error(code, err, wanted)
    assert "--memory-threshold" in err


@pytest.mark.parametrize("case", ["missing baseline", "bad json", "not a benchmark file", "no paired rows",
                                  "unwritable out", "no --out", "unknown option", "bad --threads",
                                  "missing check report", "missing models file"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    good = write(tmp_path, "good.json", run(entry("m", rounds(0.5))))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = ["--out", str(tmp_path / "o")]
    argv, wanted = {
        "missing baseline": (["--baseline", str(tmp_path / "nope.json"), *out], "not found"),
        "bad json": (["--baseline", write(tmp_path, "bad.json", "{not json"), *out], "not valid JSON"),
        "not a benchmark file": (["--baseline", write(tmp_path, "list.json", [1]), *out], "not a pytest-benchmark"),
        "no paired rows": (["--baseline", write(tmp_path, "old.json", run()), *out], "no paired manual/autograd rows"),
        "unwritable out": (["--from-json", good, "--out", str(blocker / "sub")], "cannot write"),
        "no --out": (["--from-json", good], "--out"),
        "unknown option": (["--from-json", good, *out, "--frobnicate"], "--frobnicate"),
        "bad --threads": (["--from-json", good, *out, "--threads", "0"], "positive"),
        "missing check report": (["--check-json", str(tmp_path / "none.json"), *out], "check report not found"),
        "missing models file": (["--models-from", str(tmp_path / "none.py"), "--quick", *out], "no such file"),
    }[case]
    one_line_error(*bench(*argv)[::2], wanted)


def test_from_json_gate_exit_codes_and_step_summary(tmp_path):
    nine = [0.5] * 9      # a row is judged on nine visits or more
    base = write(tmp_path, "base.json", run(*visits("mlp_relu", nine)))
    same = write(tmp_path, "same.json", run(*visits("mlp_relu", nine)))
    slower = write(tmp_path, "slower.json", run(*visits("mlp_relu", [0.7] * 9)))
    few = write(tmp_path, "few.json", run(*visits("mlp_relu", [0.7] * 6)))
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n")
    out = tmp_path / "out"
    env = {"GITHUB_STEP_SUMMARY": str(summary)}

    code, stdout, err = bench("--from-json", same, "--out", str(out), "--baseline", base, "--fail-on-regression",
                              env=env)
    assert code == 0, err
    assert "1 rows compared: 0 slower, 0 faster, 1 within threshold" in stdout
    assert (out / "report.md").read_text() in summary.read_text()
    assert summary.read_text().startswith("# earlier step\n# gradcheck-suite benchmarks")

    code, stdout, err = bench("--from-json", slower, "--out", str(out), "--baseline", base, "--fail-on-regression",
                              env=env)
    assert code == 1 and "1 regression(s) beyond 5%: mlp_relu forward+backward" in err
    assert summary.read_text().count("# gradcheck-suite benchmarks") == 2
    assert bench("--from-json", slower, "--out", str(out), "--baseline", base)[0] == 0      # reported, not failed
    code, stdout, err = bench("--from-json", few, "--out", str(out), "--baseline", base, "--fail-on-regression")
    assert code == 0 and "0 slower" in stdout and "no row can be flagged" in stdout       # six visits never flag
    assert bench("--from-json", slower, "--out", str(out), "--baseline", base, "--fail-on-regression",
                 "--threshold", "60")[0] == 0


def test_without_step_summary_nothing_is_appended(tmp_path):
    now = write(tmp_path, "now.json", run(entry("m", rounds(0.5))))
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    proc = subprocess.run([sys.executable, "-m", "gradcheck_suite", "bench", "--from-json", now, "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "step summary" not in proc.stdout


def test_a_real_quick_run_checks_first_and_marks_a_wrong_backward(tmp_path):
    # runs from a folder outside the checkout, as an installed package would
    models = tmp_path / "my_models"
    models.mkdir()
    (models / "wrong.py").write_text(WRONG.read_text())
    out = tmp_path / "report"
    code, stdout, err = bench("--quick", "--models-from", "my_models", "--models", "mlp_no_mask", "--max-time",
                              "0.05", "--out", str(out), "--no-plots", "--", "--benchmark-columns=min,rounds",
                              cwd=tmp_path)
    assert code == 0, err + stdout
    text = (out / "report.md").read_text()
    rows = [ln for ln in text.split("## Details")[0].splitlines() if ln.startswith("| mlp_no_mask ")]
    assert len(rows) == 2 and all("**FAIL**" in r and "none: check fail" in r for r in rows)
    assert "reproduce: `gradcheck-suite check mlp_no_mask --models-from my_models" in text
    data = json.loads((out / "benchmarks.json").read_text())      # pytest-benchmark's own JSON
    assert data["machine_info"]["torch_threads"] == 1 and len(data["benchmarks"]) == 12  # 2 phases x 6 quick visits
    info = data["benchmarks"][0]["extra_info"]
    assert info["check"]["verdict"] == "fail" and len(info["samples"]["manual"]) == len(info["samples"]["autograd"])


def test_verdicts_from_a_check_report(tmp_path):
    check = write(tmp_path, "check.json", {"version": 1, "models": [
        {"name": "scalar_linear", "dtype": "float32", "device": "cpu", "verdict": "fail",
         "reproduce": "gradcheck-suite check scalar_linear --seed 3"}]})
    out = tmp_path / "r"
    code, _, err = bench("--quick", "--models", "scalar_linear,affine_scalar", "--max-time", "0.03", "--check-json",
                         check, "--out", str(out), "--no-plots")
    assert code == 0, err
    text = (out / "report.md").read_text()
    assert "**FAIL**" in table_line(text, "scalar_linear") and "**NOT CHECKED**" in table_line(text, "affine_scalar")
    assert "gradcheck-suite check scalar_linear --seed 3" in text


def test_unknown_model_name_is_a_usage_error(tmp_path):
    code, _, err = bench("--quick", "--models", "mlp_rleu", "--out", str(tmp_path / "o"))
    one_line_error(code, err, "did you mean mlp_relu")


def test_a_broken_model_file_fails_the_run_but_the_others_are_benchmarked(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written model')\n")
    out = tmp_path / "r"
    code, _, err = bench("--quick", "--models-from", str(tmp_path / "broken.py"), "--models", "scalar_linear",
                         "--max-time", "0.03", "--out", str(out), "--no-plots")
    assert code == 1 and "model error:" in err and "half-written model" in err and "Traceback" not in err
    assert "| scalar_linear |" in (out / "report.md").read_text()


KEEPER = '''
"""A two-layer net whose forward caches one more tensor when GRADCHECK_KEEP_MORE is set."""
import os

from gradcheck_suite import Dim, Model

MORE = bool(os.environ.get("GRADCHECK_KEEP_MORE"))


def forward(p, d):
    h = d.x @ p.w1
    cache = (h, h.clamp(min=0) * 1.0) if MORE else (h,)
    return ((h.clamp(min=0) @ p.w2) ** 2).sum(), cache


def backward(p, d, cache, g):
    h = cache[0]
    a = h.clamp(min=0)
    gy = 2 * g * (a @ p.w2)
    gh = (gy @ p.w2.T) * (h > 0)
    return {"w1": d.x.T @ gh, "w2": a.T @ gy}


model = Model(name="keeper", dims={"N": Dim(1, 8, bench=64), "I": Dim(1, 8, bench=256), "H": Dim(1, 8, bench=64)},
              params={"w1": ("I", "H"), "w2": ("H", "I")}, data={"x": ("N", "I")}, dtype="float32",
              forward=forward, backward=backward)
'''


def test_a_backward_that_keeps_more_is_a_memory_regression_and_fails_the_gate(tmp_path):
    (tmp_path / "keeper.py").write_text(KEEPER)
    common = ["--quick", "--models-from", "keeper.py", "--max-time", "0.03", "--no-plots", "--threshold", "1000"]
    code, _, err = bench(*common, "--out", "base", cwd=tmp_path)
    assert code == 0, err
    code, out, err = bench(*common, "--out", "now", "--baseline", "base/benchmarks.json", "--fail-on-regression",
                           env={"GRADCHECK_KEEP_MORE": "1"}, cwd=tmp_path)
    assert code == 1, err + out
    assert "1 memory regression(s) beyond 0%: keeper (kept 16384 → 32768 bytes" in err
    assert "**memory regression**" in (tmp_path / "now" / "report.md").read_text()
    info = json.loads((tmp_path / "now" / "benchmarks.json").read_text())["benchmarks"][0]["extra_info"]
    assert info["memory"]["manual"]["kept"] == 2 * 64 * 64 * 4 and info["memory"]["autograd"]["kept"] > 0
    # the same run against itself: no growth, exit 0
    code, out, err = bench("--from-json", "now/benchmarks.json", "--out", "again", "--baseline", "now/benchmarks.json",
                           "--fail-on-regression", cwd=tmp_path)
    assert code == 0 and "0 memory regression(s)" in out, err


def test_a_users_report_covers_the_users_models_and_the_examples_only_when_asked(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck-suite]\nmodels-from = ["models/"]\n')
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "keeper.py").write_text(KEEPER)
    code, out, err = bench("--quick", "--max-time", "0.03", "--no-plots", "--out", "r", cwd=tmp_path / "models")
    assert code == 0, err
    text = (tmp_path / "models" / "r" / "report.md").read_text()
    names = {ln.split("|")[1].strip() for ln in text.split("## Details")[0].splitlines() if ln.startswith("| ")}
    assert names == {"model", "---", "keeper"} and "mlp_relu" not in text and "target" not in text
    code, _, err = bench("--quick", "--max-time", "0.03", "--no-plots", "--models", "keeper,scalar_linear",
                         "--out", "r2", cwd=tmp_path)
    assert code == 0, err
    assert "| scalar_linear |" in (tmp_path / "r2" / "report.md").read_text()      # named: the example comes along


def test_with_nothing_configured_bench_says_so(tmp_path):
    code, _, err = bench("--quick", "--out", str(tmp_path / "o"), cwd=tmp_path)
    one_line_error(code, err, "no models configured")
