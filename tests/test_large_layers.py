"""Large layers (issue 24, item 6): the diagnosis runs within a budget and as a phase, axis
swaps are named, a costly failure still shrinks to its small case, the quick profile has a
time budget per model that the report states, and pytest gets the command line's heartbeat.
Small sizes throughout; behaviour only, never timings."""
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

# pytester runs pytest inside this process: import the checker first (see test_plugin.py)
import gradcheck_suite.run.report  # noqa: F401
import gradcheck_suite.run.strategies  # noqa: F401
from gradcheck_suite import Case, Dim, Model
from gradcheck_suite.run import runner
from gradcheck_suite.verdict import rules
from gradcheck_suite.diagnose import diagnose
from gradcheck_suite.run.limits import run_case

D = 6       # the layer's fixed width: the sizes stay small, the structure is a wide layer's


def _forward(p, d):
    y = torch.tanh(d.x @ p.w)
    return y, y


def _right(p, d, y, g):
    gz = g * (1 - y * y)
    B, T, _ = d.x.shape
    return {"w": d.x.reshape(B * T, -1).T @ gz.reshape(B * T, -1), "x": gz @ p.w.T}


def _g_read_as_t_by_b(p, d, y, g):
    B, T, _ = d.x.shape
    g = g.transpose(0, 1).reshape(B, T, -1)        # the bug: a T×B buffer read as B×T
    gz = g * (1 - y * y)
    return {"w": d.x.reshape(B * T, -1).T @ gz.reshape(B * T, -1), "x": gz @ p.w.T}


def _layer(name, backward, **kw):
    return Model(name=name, dims={"B": Dim(1, 4, 4), "T": Dim(1, 5, 5)}, params={"w": (D, D)},
                 data={"x": ("B", "T", D)}, grad_data=("x",), forward=_forward, backward=backward, **kw)


def _case(model, **dims):
    return Case(model.name, dims, model.dtype, "cpu", 0, 1.0, {})


def _diagnosed(model, **dims):
    res = run_case(model, _case(model, **dims))
    assert res.verdict == "fail"
    found = diagnose(model, res.case, res.failing, {n: c.bound for n, c in res.tensors.items()})
    return res, {k.tensor: k for k in found.mistakes}


# -- the mistake: axes swapped -----------------------------------------------------------

def test_an_upstream_gradient_read_with_its_axes_swapped_is_named_with_the_axes():
    res, mistakes = _diagnosed(_layer("g_swapped", _g_read_as_t_by_b), B=2, T=3)
    assert set(res.failing) == {"w", "x"}
    for n in ("w", "x"):
        assert mistakes[n].mistake == "permuted", mistakes[n].text
        assert "upstream gradient g" in mistakes[n].text and "axes 0 (B) and 1 (T) swapped" in mistakes[n].text


def test_a_gradient_returned_with_its_own_axes_swapped_is_named():
    def forward(p, d):
        return (p.w * d.x).sum(), None

    def backward(p, d, cache, g):        # the bug: dw built from x with its first and last axes swapped
        return {"w": g * d.x.transpose(0, 2).reshape(d.x.shape)}

    m = Model(name="own_axes", dims={"A": Dim(1, 4, 4), "C": Dim(1, 4, 4)}, params={"w": ("A", 3, "C")},
              data={"x": ("A", 3, "C")}, forward=forward, backward=backward)
    _, mistakes = _diagnosed(m, A=2, C=4)
    assert mistakes["w"].mistake == "permuted", mistakes["w"].text
    assert "axes 0 (A) and 2 (C) swapped" in mistakes["w"].text


def test_an_input_read_transposed_is_named():
    def forward(p, d):
        y = d.x @ p.w
        return y, None

    def backward(p, d, cache, g):        # the bug: x's B and T swapped in the weight's gradient
        B, T, _ = d.x.shape
        xt = d.x.transpose(0, 1).reshape(B * T, -1)
        return {"w": xt.T @ g.reshape(B * T, -1)}

    m = Model(name="x_swapped", dims={"B": Dim(1, 4, 4), "T": Dim(1, 5, 5)}, params={"w": (D, D)},
              data={"x": ("B", "T", D)}, forward=forward, backward=backward)
    _, mistakes = _diagnosed(m, B=2, T=3)
    assert mistakes["w"].mistake == "permuted", mistakes["w"].text
    assert "for x with axes 0 (B) and 1 (T) swapped" in mistakes["w"].text


def test_a_wrong_row_is_not_called_a_permutation():
    def backward(p, d, y, g):
        out = _right(p, d, y, g)
        out["w"] = out["w"].clone()
        out["w"][1] *= 1.5               # one row off: partial, not axes
        return out

    _, mistakes = _diagnosed(_layer("row_off", backward), B=2, T=3)
    assert mistakes["w"].mistake == "partial", mistakes["w"].text


def test_a_correct_layer_passes_at_every_corner():
    run = runner.run_model(_layer("right", _right), examples=12, dtype="float32")
    assert run.verdict == "pass", run.failure and run.failure.problems


# -- shrinking a costly failure -----------------------------------------------------------

def test_a_wrong_large_layer_shrinks_to_the_small_case_and_names_the_swap():
    """Every case costs what its fixed width costs (here a sleep stands in for a 4096-wide
    weight): the shrink still reaches B=2, T=2, through the all-twos corner."""
    def slow_forward(p, d):
        time.sleep(0.05)
        return _forward(p, d)

    m = Model(
        name="g_swapped_large", dims={"B": Dim(1, 4, 4), "T": Dim(1, 5, 5)}, params={"w": (D, D)},
        data={"x": ("B", "T", D)}, grad_data=("x",), forward=slow_forward, backward=_g_read_as_t_by_b)
    run = runner.run_model(m, examples=20)
    assert run.verdict == "fail"
    assert run.failure.case.dims == {"B": 2, "T": 2}
    mistakes = {k.tensor: k.mistake for k in run.failure.diagnosis}
    assert mistakes == {"w": "permuted", "x": "permuted"}


def test_the_shrink_budget_grows_with_the_cost_of_a_case_and_has_a_cap():
    assert runner.shrink_budget(0.0) == rules.SHRINK_SECONDS
    assert runner.shrink_budget(5.0) == min(rules.SHRINK_CAP, rules.SHRINK_CASES * 5.0) > rules.SHRINK_SECONDS
    assert runner.shrink_budget(1e6) == rules.SHRINK_CAP


def test_the_small_corners_stay_within_the_record():
    m = Model(name="bounded", dims={"L": Dim(3, 9, 4), "K": Dim(1, "L", 2)}, params={"w": ("L", "K")},
              data={}, forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
    corners = [c.dims for c in runner._small_corners(m, _case(m, L=9, K=7), {})]
    assert corners == [{"L": 3, "K": 1}, {"L": 3, "K": 2}]
    assert [c.dims for c in runner._small_corners(m, _case(m, L=9, K=7), {"L": 9})] == [{"L": 9, "K": 1},
                                                                                           {"L": 9, "K": 2}]


# -- the quick profile's time budget --------------------------------------------------------

def _slow_right_layer():
    def slow_forward(p, d):
        time.sleep(0.02)
        return _forward(p, d)
    return Model(name="slow_right", dims={"B": Dim(1, 4, 4), "T": Dim(1, 5, 5)}, params={"w": (D, D)},
                 data={"x": ("B", "T", D)}, grad_data=("x",), forward=slow_forward, backward=_right)


def test_the_quick_budget_cuts_drawn_cases_never_the_corners_and_says_so(monkeypatch):
    from gradcheck_suite.run import strategies
    m = _slow_right_layer()
    monkeypatch.setattr(rules, "QUICK_SECONDS", 0.0)
    run = runner.run_model(m)
    corners = len(strategies.corners(m))
    assert run.verdict == "pass" and run.budget_cut
    assert run.checked + run.nondiff + run.skipped == corners < run.planned == 20
    assert any(f"stopped the cases after {corners} of 20" in n for n in run.notes.values())
    full = runner.run_model(m, examples=20)              # asked for: every case (hypothesis may draw a repeat)
    assert not full.budget_cut and not full.notes and full.checked + full.nondiff + full.skipped > corners


def test_the_command_line_prints_the_budget_note_and_the_json_has_it(tmp_path):
    models = tmp_path / "slow.py"
    models.write_text(textwrap.dedent('''
        import time, torch
        from gradcheck_suite import Dim, Model
        def forward(p, d):
            time.sleep(0.02)
            return torch.tanh(d.x @ p.w), None
        def backward(p, d, c, g):
            y = torch.tanh(d.x @ p.w)
            gz = g * (1 - y * y)
            return {"w": d.x.T @ gz}
        model = Model(name="slow_right", dims={"N": Dim(1, 4, 4)}, params={"w": (3, 3)}, data={"x": ("N", 3)},
                      forward=forward, backward=backward)
    '''))
    code = ("import sys; import gradcheck_suite.verdict.rules as r; r.QUICK_SECONDS = 0.0; "
            "from gradcheck_suite.commands import main; sys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, "check", "slow_right", "--models-from", str(models),
                          "--json", str(tmp_path / "r.json")], text=True, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "slow_right: note: the quick profile's time budget" in out.stdout
    import json
    row = json.loads((tmp_path / "r.json").read_text())["models"][0]
    assert row["budget_cut"] is True and row["counts"]["planned"] == 20 and row["notes"]


# -- the diagnosis: a phase with a heartbeat, and a budget ----------------------------------

SLOW_DIAGNOSIS = '''
import time, torch
from gradcheck_suite import Dim, Model
calls = [0]
def forward(p, d):
    return torch.tanh(d.x @ p.w), None
def backward(p, d, c, g):
    calls[0] += 1
    if calls[0] > 2:            # the check's own two calls are quick; the diagnosis's are slow
        time.sleep(0.4)
    y = torch.tanh(d.x @ p.w)
    gz = g * (1 - y * y)
    return {"w": 3 * d.x.T @ gz}
model = Model(name="slow_diagnosis", dims={"N": Dim(1, 4, 4)}, params={"w": (3, 3)}, data={"x": ("N", 3)},
              forward=forward, backward=backward)
'''


def test_the_diagnosis_is_a_phase_of_the_heartbeat_off_a_terminal(tmp_path):
    models = tmp_path / "slow_diagnosis.py"
    models.write_text(SLOW_DIAGNOSIS)
    env = {**os.environ, "GRADCHECK_SUITE_HEARTBEAT": "0.3"}
    out = subprocess.run([sys.executable, "-m", "gradcheck_suite", "check", "slow_diagnosis", "--models-from",
                          str(models), "--dims", "N=2", "--seed", "0", "--scale", "1"],
                         text=True, capture_output=True, timeout=300, env=env)
    assert out.returncode == 1, out.stderr
    assert "slow_diagnosis float64 cpu: diagnosis (budget" in out.stderr
    assert "(scale ×3)" in out.stdout            # the diagnosis still finished and was reported


def test_a_diagnosis_past_its_budget_leaves_the_failure_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(rules, "DIAGNOSE_MIN", 0.2)
    monkeypatch.setattr(rules, "DIAGNOSE_SHARE", 0.0)
    ns: dict = {}
    exec(compile(SLOW_DIAGNOSIS.replace("0.4", "1.0"), str(tmp_path / "m.py"), "exec"), ns)
    run = runner.run_model(ns["model"], dims={"N": 2}, seed=0, scale=1.0)
    assert run.verdict == "fail" and run.failure.failing == ["w"]
    assert "budget" in (run.failure.location_note or "") + " ".join(run.failure.notes)


# -- pytest gets the heartbeat --------------------------------------------------------------

SLOW_MODELS = '''
import time, torch
from gradcheck_suite import Dim, Model
def forward(p, d):
    time.sleep(0.1)
    return torch.tanh(d.x @ p.w), None
def backward(p, d, c, g):
    y = torch.tanh(d.x @ p.w)
    return {"w": d.x.T @ (g * (1 - y * y))}
model = Model(name="slow_layer", dims={"N": Dim(1, 4, 4)}, params={"w": (3, 3)}, data={"x": ("N", 3)},
              forward=forward, backward=backward)
'''


def test_pytest_gets_a_heartbeat_line_on_a_long_check(pytester, monkeypatch):
    monkeypatch.setenv("GRADCHECK_SUITE_HEARTBEAT", "0.3")
    pytester.makepyfile(test_user_models="def test_backward(gradcheck_target):\n    gradcheck_target.check()\n")
    models = pytester.makepyfile(slow_models=SLOW_MODELS)
    result = pytester.runpytest("--gradcheck-models-from", str(models), "--gradcheck-device", "cpu",
                                "--gradcheck-examples", "4")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*gradcheck-suite: still running slow_layer float64 cpu: case */4*"])
