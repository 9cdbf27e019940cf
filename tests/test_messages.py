"""Messages that point the right way: every figure belongs to the case it names (or says which
size it is from), `look at:` names the file and the line that first goes wrong, a swap or a
backward that is not deterministic is named before what follows from it, a passing row shows
its error against the tolerance that decided it, a value that is not a tensor says what to
return, and cases set aside say why."""
import inspect
import json
import re
import textwrap

import pytest
import torch

from gradcheck_suite import Dim, Model, op_model
from gradcheck_suite.run.report import case_json, case_message
from gradcheck_suite import run_model
from gradcheck_suite import Tensors
from tests.models.diagnosis_bank import BANK, bug_line
from tests.test_cli import WRONG, flat, gcs


# -- figures belong to the case they name ------------------------------------------------------

def rows_forward(p, d):
    return (d.x * p.w).sum(), None


def first_row_tripled(p, d, cache, g):
    gw = g * d.x
    gw[0] *= 3                                   # wrong in row 0 only: at 1 x 1, a factor of 3
    return {"w": gw}


def test_a_kind_judged_at_a_larger_size_says_which_size_its_figures_are_from():
    m = Model(name="first_row_tripled", dims={"N": Dim(1, 5, 6), "D": Dim(1, 4, 3)}, params={"w": ("N", "D")},
              data={"x": ("N", "D")}, forward=rows_forward, backward=first_row_tripled)
    res = run_model(m, examples=10).failure
    assert res.case.dims == {"N": 1, "D": 1}
    (mistake,) = res.diagnosis
    assert mistake.mistake == "partial" and mistake.dims == {"N": 6, "D": 3}
    assert mistake.text.startswith("at N=6, D=3, larger than this case: ") and "rows [0] of 6" in mistake.text
    assert case_json(res)["diagnosis"][0]["dims"] == {"N": 6, "D": 3}
    # the counts of the case's own line are the case's: 1 of 1 element
    assert "shape 1×1: 1 of 1 outside tolerance: at N=6, D=3" in flat(case_message(res))


# -- look at: the file, and the line that first goes wrong ---------------------------------------

@pytest.mark.parametrize("name", ["bank_conv_unflipped", "bank_conv_flipped_w", "bank_square_dict_untransposed"])
def test_look_at_is_the_line_that_first_goes_wrong_not_the_one_after(name):
    entry = next(e for e in BANK if e.model.name == name)
    res = run_model(entry.model, examples=20).failure
    assert res is not None and res.location is not None, res and res.location_note
    assert (res.location.file, res.location.line) == bug_line(entry), case_message(res)


def rows_last_skipped(p, d, cache, g):
    gw = torch.zeros_like(p.w)
    for i in range(p.w.shape[0] - 1):              # BUG: the last row is never visited
        gw[i] = g[i] * d.x[i]
    return {"w": gw}


def test_elements_no_write_reaches_point_at_the_loop_not_at_the_zeros_they_keep():
    m = Model(name="rows_last_skipped", dims={"N": Dim(1, 5, 4), "D": Dim(1, 3, 3)}, params={"w": ("N", "D")},
              data={"x": ("N", "D")}, forward=rows_forward, backward=rows_last_skipped)
    res = run_model(m, examples=10).failure
    lines, first = inspect.getsourcelines(rows_last_skipped)
    loop = first + next(i for i, line in enumerate(lines) if "# BUG" in line)
    assert res.location is not None and res.location.line == loop, case_message(res)
    assert "keep the value it was made with" in res.location.sentence()


@pytest.mark.parametrize("name", ["bank_conv_ok", "bank_square_ok"])
def test_their_correct_twins_pass(name):
    entry = next(e for e in BANK if e.model.name == name)
    assert run_model(entry.model, examples=20).verdict == "pass"


def test_every_line_look_at_cites_comes_with_its_file():
    entry = next(e for e in BANK if e.model.name == "bank_tut_no_mask")
    res = run_model(entry.model, examples=20).failure
    text = flat(case_message(res)).split("look at:")[1].split("reproduce:")[0]
    assert "forward line" not in text and not re.search(r"\(line \d+\)", text), text
    assert re.search(r"defined at \S*diagnosis_bank\.py:\d+", text), text
    assert re.search(r"\(\S*diagnosis_bank\.py:\d+\) is right", text), text
    assert case_json(res)["location"]["text"] in text


# -- a swap, and chance, are named before what follows from them --------------------------------

class ScaleSwapped(torch.autograd.Function):
    """y = a * exp(b), with both gradients returned, each in the other's slot."""

    @staticmethod
    def forward(ctx, a, b):
        e = torch.exp(b)
        ctx.save_for_backward(a, e)
        return a * e

    @staticmethod
    def backward(ctx, g):
        a, e = ctx.saved_tensors
        ga = g * e if ctx.needs_input_grad[0] else None
        gb = g * a * e if ctx.needs_input_grad[1] else None
        return gb, ga


class ScaleJittered(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        e = torch.exp(b)
        ctx.save_for_backward(a, e)
        return a * e

    @staticmethod
    def backward(ctx, g):
        a, e = ctx.saved_tensors
        jitter = 1 + 0.05 * torch.rand_like(e)        # a stochastic backward
        return g * e * jitter, g * a * e * jitter


def _scale(op, name):
    return op_model(op, name=name, dims={"N": Dim(1, 5, 4)}, inputs={"a": ("N",), "b": ("N",)},
                    reference=lambda a, b: a * torch.exp(b))


def test_gradients_in_swapped_slots_fail_as_swapped_before_any_needs_input_grad_finding():
    res = run_model(_scale(ScaleSwapped, "scale_swapped"), examples=10).failure
    assert res.verdict == "fail" and sorted(res.failing) == ["a", "b"]
    assert {k.tensor: k.mistake for k in res.diagnosis} == {"a": "swapped", "b": "swapped"}
    assert any("needs no gradient" in n for n in res.notes), res.notes      # a note, not the headline
    assert case_message(res).startswith("scale_swapped: fail — the manual gradient of a, b")


def test_a_backward_that_draws_random_numbers_is_named_so_not_a_needs_input_grad_dependence():
    run = run_model(_scale(ScaleJittered, "scale_jittered"), examples=10)
    res = run.failure
    head = case_message(res).splitlines()[0] + " " + " ".join(res.problems + res.notes)
    assert "draws random numbers" in head, head
    assert "needs no gradient" not in head, head


# -- the error that decided the verdict, over its tolerance -------------------------------------

def test_the_table_and_json_show_each_error_over_its_tolerance(tmp_path):
    r = gcs("check", "mlp_relu", "two_layer_net", "--examples", "6", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stdout + r.stderr
    head, columns = r.stdout.splitlines()[:2]
    assert "error/tolerance" in head and "autograd fin diff" in columns
    for row in json.loads((tmp_path / "r.json").read_text())["models"]:
        over = row["worst_over_tolerance"]
        assert 0 <= over["autograd"] <= 1 and 0 <= over["finite_diff"] <= 1, row
        assert set(row["worst_rel_err"]) == {"autograd", "finite_diff"}       # kept, beside it


def test_a_failing_case_is_over_its_tolerance_in_both_columns(tmp_path):
    r = gcs("check", "mlp_no_mask", "--models-from", WRONG, "--json", tmp_path / "r.json")
    assert r.returncode == 1
    failure = json.loads((tmp_path / "r.json").read_text())["models"][0]["failure"]
    assert failure["over_tolerance"]["autograd"] > 1 and failure["over_tolerance"]["finite_diff"] > 1
    assert failure["parameters"]["w1"]["max_over_tolerance"] > 1


# -- what to return, in one line -----------------------------------------------------------------

WHAT_TO_DO = textwrap.dedent('''
    import numpy as np
    import torch
    from gradcheck_suite import Dim, Model, op_model

    def numpy_loss(p, d):
        return np.float64((p.w.numpy() ** 2).sum()), None

    def any_backward(p, d, cache, g):
        return {"w": 2 * p.w * g}

    def steps_in_place(p, d):
        p.w -= 0.1 * d.x
        return (p.w ** 2).sum(), None

    class Listed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            return [g * b, g * a]

    D = {"N": Dim(1, 4, 3)}
    numpy_output = Model(name="numpy_output", dims=D, params={"w": ("N",)}, forward=numpy_loss,
                         backward=any_backward)
    in_place = Model(name="in_place", dims=D, params={"w": ("N",)}, data={"x": ("N",)}, forward=steps_in_place,
                     backward=any_backward)
    listed = op_model(Listed, name="listed", dims=D, inputs={"a": ("N",), "b": ("N",)}, reference=torch.mul)
''')


def test_a_value_that_is_not_what_torch_takes_gets_one_line_that_says_what_to_return(tmp_path):
    (tmp_path / "what.py").write_text(WHAT_TO_DO)
    r = gcs("check", "--models-from", tmp_path / "what.py", "--examples", "2", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    out = flat(r.stdout)
    assert ("numpy_output: error — forward's output must be a floating-point tensor, got numpy.float64 "
            "(a numpy scalar): return the output as a torch tensor") in out, out
    assert "in_place: error — forward changed its input p.w in place: compute into a new tensor" in out, out
    assert ("listed: error — backward returned 1 gradient where torch expects 2, one per argument of the "
            "Function's forward: return a tuple") in out, out
    assert "a list or a lone tensor counts as one" in out
    assert "expected 2, got 1" in out          # torch's own words, quoted after ours


def test_an_attribute_set_in_place_keeps_the_tensor_and_a_new_one_says_to_set_an_item():
    p = Tensors(w=torch.ones(3))
    w = p.w
    p.w -= 1.0                      # in place: the same tensor goes back under its name
    assert p.w is w and bool((p.w == 0).all())
    with pytest.raises(AttributeError, match=r"cannot assign \.w: .* set as items, e\.g\. p\['w'\] = \.\.\."):
        p.w = torch.zeros(3)


# -- cases set aside say why, and how many were judged -------------------------------------------

MOSTLY_NAN = textwrap.dedent('''
    import torch
    from gradcheck_suite import Dim, Model

    def forward(p, d):
        return torch.log(p.w).sum(), None

    def backward(p, d, cache, g):
        return {"w": g / p.w}

    log_w = Model(name="log_w", dims={"N": Dim(1, 6, 4)}, params={"w": ("N",)}, forward=forward,
                  backward=backward)
''')


def test_cases_set_aside_are_reported_with_their_reason_and_the_count_judged(tmp_path):
    (tmp_path / "nan.py").write_text(MOSTLY_NAN)
    r = gcs("check", "log_w", "--models-from", tmp_path / "nan.py", "--json", tmp_path / "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout
    row = json.loads((tmp_path / "r.json").read_text())["models"][0]
    aside, judged = row["counts"]["skipped"] + row["counts"]["non_differentiable"], row["counts"]["checked"]
    assert aside > 0 and row["aside"][0]["reason"] == "a forward that is NaN or Inf at the drawn values"
    out = flat(r.stdout)
    assert (f"log_w in float64: {aside} of {aside + judged} cases set aside, {aside} with a forward that is NaN "
            "or Inf at the drawn values (e.g. dims N=") in out, out
    assert "keep the draws inside its domain with the record's domain= or a factory" in out
    assert f"the verdict rests on the {judged} cases judged" in out


def test_a_model_with_nothing_set_aside_gets_no_such_line():
    run = run_model(next(e for e in BANK if e.model.name == "bank_tut_ok").model, examples=5)
    from gradcheck_suite.run.report import aside_details
    assert run.nondiff + run.skipped == 0 and aside_details(run) == ""


def test_a_fault_of_the_harness_during_finite_differences_is_not_blamed_on_the_forward(monkeypatch):
    import functools

    from gradcheck_suite import check
    from gradcheck_suite.verdict import oracles
    from gradcheck_suite import Case
    entry = next(e for e in BANK if e.model.name == "bank_tut_ok")
    # a C function called from the harness's own frame fails, as a slip of the harness would
    monkeypatch.setattr(oracles, "judge", functools.partial(divmod, 1, 0))
    res = check.check_case(entry.model, Case(entry.model.name, {"N": 2, "D": 2, "H": 2, "O": 1}, "float64", "cpu",
                                             0, 1.0))
    assert res.verdict == "error" and res.internal, res.problems
    assert res.problems[0].startswith("internal error in gradcheck-suite while taking finite differences")
    assert "forward raised" not in res.problems[0]
