"""Shapes where the dims differ: the corner schedule puts each dim at its low end with the
others high and makes every two dims meet at every pair of their levels, so a backward that
is right only where two dims are equal, or wrong only where one dim is 1 and another is not,
fails in the quick profile by the schedule itself, never by a lucky draw.  A Function's
gradient that torch sums down to its input's shape is a note in the report."""
import itertools
from pathlib import Path

import pytest
import torch

from gradcheck_suite import Dim, Model, op_model
from gradcheck_suite import run_model
from gradcheck_suite.run.strategies import PROFILES, awkward, corners
from tests.conftest import flat
from tests.models import dims_differ as dd

from .test_bench_cli import bench
from .test_cli import gcs, report

MODELS = Path(dd.__file__)
QUICK = PROFILES["quick"]["max_examples"]


def _levels(model, name, got):
    low, high = model.dims[name].bounds(got)
    return {"low": low, "high": high, "awkward": awkward(low, high)}


# -- the schedule ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mlp_relu", "linear_layer", "deep_linear", "linear_regression"])
def test_each_dim_meets_the_others_at_its_low_end_and_every_pair_of_levels(registry, name):
    m = registry.get(name)
    got = [dims for dims, *_ in corners(m)]
    assert len(got) <= QUICK
    for one, dim in m.dims.items():
        others = {k: d.high for k, d in m.dims.items() if k != one}
        assert {**others, one: dim.low} in got, one
    for a, b in itertools.combinations(m.dims, 2):
        for la, lb in itertools.product(*(set(_levels(m, k, {}).values()) for k in (a, b))):
            assert any(d[a] == la and d[b] == lb for d in got), (a, la, b, lb)


def test_equal_ranged_dims_are_made_unequal_both_ways_at_large_sizes():
    m = Model(name="three_equal", dims={k: Dim(1, 16, 8) for k in "ABC"}, params={"w": ("A", "B", "C")},
              forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
    got = [dims for dims, *_ in corners(m)]
    for a, b in itertools.permutations("ABC", 2):
        assert any(d[a] == 1 and d[b] == 16 for d in got), (a, b)          # one at 1, the other large
        assert any(d[a] == 15 and d[b] == 16 for d in got), (a, b)         # both large, unequal
    assert len(got) <= QUICK


def test_dim_expressions_where_and_fixed_dims_still_hold_in_every_corner():
    m = Model(name="conv_like", dims={"L": Dim(1, 12, 8), "K": Dim(1, "L", 3), "C": Dim(1, 6, 4)},
              params={"w": ("C", "K")}, data={"x": ("C", "L")}, where="L != 11",
              forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
    got = corners(m)
    assert got and len(got) <= QUICK
    for dims, *_ in got:
        assert 1 <= dims["K"] <= dims["L"] and dims["L"] != 11, dims
    sizes = [d for d, *_ in got]
    assert any(d["K"] == 1 and d["L"] == 12 for d in sizes)                # a kernel of 1 on a long input
    assert any(d["C"] == 1 and d["L"] == 12 and d["K"] == 12 for d in sizes)
    fixed = corners(m, fixed_dims={"L": 5}, scale=2.0)
    assert fixed and all(d["L"] == 5 and 1 <= d["K"] <= 5 and sc == 2.0 for d, _, _, sc in fixed)
    assert any(d["K"] == 1 and d["C"] == 6 for d, *_ in fixed) and any(d["K"] == 5 and d["C"] == 1 for d, *_ in fixed)


def test_pairs_that_where_refuses_are_left_out_and_the_rest_still_covered():
    m = Model(name="tied", dims={k: Dim(1, 16, 8) for k in "ABC"}, params={"w": ("A", "B", "C")}, where="A == B",
              forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
    got = [dims for dims, *_ in corners(m)]
    assert got and all(d["A"] == d["B"] for d in got) and len(got) <= QUICK
    for a in (1, 15, 16):
        for c in (1, 15, 16):
            assert {"A": a, "B": a, "C": c} in got, (a, c)


# -- both classes of bug, caught by the schedule alone -----------------------------------------

@pytest.mark.parametrize("wrong, right, tensor", [
    ("rmsnorm_batch", "rmsnorm", "x"),                  # divides by shape[0] where it means shape[-1]
    ("rmsnorm_batch_fn", "rmsnorm_fn", "x"),
    ("sparsemax_squeeze_fn", "sparsemax_fn", "z"),      # .squeeze() on the per-row sum
])
def test_a_backward_right_only_where_dims_are_equal_or_none_is_one_fails_in_the_corners(wrong, right, tensor):
    bad = getattr(dd, wrong)
    alone = run_model(bad, examples=len(corners(bad)))      # no drawn case at all
    assert alone.verdict == "fail" and alone.failure.failing == [tensor], (alone.verdict, alone.problems)
    quick = run_model(bad)
    assert quick.verdict == "fail" and quick.failure.failing == [tensor]
    dims = quick.failure.case.dims
    assert len(set(dims.values())) > 1, dims            # the shrunk case still has dims that differ
    for dtype in ("float64", "float32"):
        good = run_model(getattr(dd, right), dtype=dtype)
        assert good.verdict == "pass", (dtype, good.problems, good.failure and good.failure.problems)


def test_a_record_whose_squeeze_breaks_one_size_one_dim_is_a_shape_error_naming_the_tensor():
    bad = run_model(dd.sparsemax_squeeze, examples=len(corners(dd.sparsemax_squeeze)))
    assert bad.verdict == "error"
    problem = bad.failure.problems[0]
    assert problem.startswith("z: gradient shape") and bad.failure.case.dims["T"] == 1 < bad.failure.case.dims["B"]
    assert run_model(dd.sparsemax_rows).verdict == "pass"


# -- a gradient that torch sums down to the input's shape ---------------------------------------

class AddBiasUnreduced(torch.autograd.Function):
    """y = x + b; the backward hands back g for b as it is, (N, D) for a (D,) bias, and
    leaves the sum over the rows to torch's engine: correct, if unusual."""

    @staticmethod
    def forward(ctx, x, b):
        return x + b

    @staticmethod
    def backward(ctx, g):
        return g, g


ADD_BIAS = op_model(AddBiasUnreduced, name="add_bias_unreduced", dims={"N": Dim(1, 6, 8), "D": Dim(1, 5, 8)},
                    inputs={"x": ("N", "D"), "b": ("D",)}, reference=lambda x, b: x + b)


def test_a_gradient_torch_sums_to_the_inputs_shape_is_a_note_on_a_passing_run():
    run = run_model(ADD_BIAS)
    assert run.verdict == "pass", run.problems
    notes = [n for k, n in run.notes.items() if k != "batched rule"]   # AddBias has no vmap rule: its own note
    assert len(notes) == 1 and notes[0].startswith("b: backward returns a gradient of shape"), notes
    assert "for an input of shape" in notes[0] and "the values decide" in notes[0]
    assert not any(n.startswith("x:") for n in notes)


def test_the_note_comes_with_a_failure_that_the_sum_made():
    run = run_model(dd.sparsemax_squeeze_fn)
    assert run.verdict == "fail"
    b, t = run.failure.case.dims["B"], run.failure.case.dims["T"]
    k = run.failure.case.dims["K"]
    wanted = f"z: backward returns a gradient of shape {(b, b, k)} for an input of shape {(b, t, k)}"
    assert any(n.startswith(wanted) for n in run.failure.notes), run.failure.notes
    assert not any("shape" in n for n in run_model(dd.sparsemax_fn).notes.values())


def test_the_note_reaches_the_text_and_json_report(tmp_path):
    model = tmp_path / "bias.py"
    model.write_text(
        "import torch\nfrom gradcheck_suite import Dim, op_model\n\n"
        "class AddBias(torch.autograd.Function):\n"
        "    @staticmethod\n    def forward(ctx, x, b):\n        return x + b\n\n"
        "    @staticmethod\n    def backward(ctx, g):\n        return g, g\n\n"
        "add_bias = op_model(AddBias, name='add_bias', dims={'N': Dim(1, 4, 8), 'D': Dim(1, 3, 8)},\n"
        "                    inputs={'x': ('N', 'D'), 'b': ('D',)}, reference=lambda x, b: x + b)\n")
    r = gcs("check", "add_bias", "--models-from", model, "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "add_bias: note: b: backward returns a gradient of shape" in flat(r.stdout)
    doc = report(tmp_path / "r.json")["models"][0]
    notes = [n for n in doc["notes"] if "defines no vmap staticmethod" not in n]   # AddBias has no vmap rule
    assert doc["verdict"] == "pass" and len(notes) == 1 and notes[0].startswith("b: backward returns")


# -- bench's check is check's quick profile ------------------------------------------------------

def test_bench_reports_fail_for_a_backward_right_only_where_two_dims_are_equal(tmp_path):
    out = tmp_path / "report"
    code, stdout, err = bench("--quick", "--models-from", str(MODELS), "--models", "rmsnorm_batch,rmsnorm",
                              "--max-time", "0.03", "--out", str(out), "--no-plots", cwd=tmp_path)
    assert code == 0, err + stdout
    text = (out / "report.md").read_text()
    table = text.split("## Details")[0]
    wrong = [ln for ln in table.splitlines() if ln.startswith("| rmsnorm_batch ")]
    right = [ln for ln in table.splitlines() if ln.startswith("| rmsnorm ")]
    assert wrong and all("**FAIL**" in ln and "check fail" in ln for ln in wrong), table
    assert right and not any("FAIL" in ln for ln in right), table
    assert "rmsnorm_batch: check fail (quick check)" in flat(text)


def test_a_bench_check_cut_short_says_it_is_not_checks_verdict(tmp_path):
    out = tmp_path / "report"
    code, stdout, err = bench("--quick", "--models", "scalar_linear", "--max-time", "0.03", "--out", str(out),
                              "--no-plots", "--", "--bench-check-examples", "3", cwd=tmp_path)
    assert code == 0, err + stdout
    assert "check pass (quick check, 3 cases (fewer than check's 20: not check's verdict))" in \
        flat((out / "report.md").read_text())

