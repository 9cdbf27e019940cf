"""Higher orders (check/stages/double_backward.py): ``order=N`` checks the N-th derivative
through the user's backward, each order from 2 up, as JAX's ``check_grads(order=N)``;
``double_backward=True`` is ``order=2``."""
import dataclasses
import subprocess
import sys

import pytest
import torch

from gradcheck_suite import Dim, Model, SpecError, op_model, run_model
from gradcheck_suite.check.case import Case

ONE = dict(dims={"N": 4, "I": 3, "O": 2}, seed=5, scale=1.0)


def _tanh_layer(name: str, **fields) -> Model:
    """A record whose backward is written in differentiable torch ops: right at every order."""
    def forward(p, d):
        y = torch.tanh(d.x @ p.w)
        return (y * d.t).sum(), y

    def backward(p, d, y, g):
        return {"w": d.x.T @ (g * d.t * (1 - y * y))}

    return Model(name=name, dims={"N": Dim(1, 6, 4), "I": Dim(1, 5, 3), "O": Dim(1, 4, 2)}, params={"w": ("I", "O")},
                 data={"x": ("N", "I"), "t": ("N", "O")}, forward=forward, backward=backward, **fields)


def _chain(third: float):
    """P3(x) = (5x^3 - 3x)/2 as a chain of Functions, each backward calling the next Function:
    P3's backward calls dP3 (its value P3'), whose backward calls ddP3 (P3'' = 15x), whose own
    backward gives P3''' = ``third`` (15 is right).  The first two orders never run ddP3's
    backward, so a wrong ``third`` shows at order 3 only."""

    class DDP3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 15 * x

        @staticmethod
        def backward(ctx, g):
            return g * third

    class DP3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return 1.5 * (5 * x ** 2 - 1)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * DDP3.apply(x)

    class P3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return 0.5 * (5 * x ** 3 - 3 * x)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * DP3.apply(x)

    return P3


def _two_inputs(third: float, name: str, **fields) -> Model:
    """a through the chain of Functions, b through plain torch: only a's third derivative can be wrong."""
    p3 = _chain(third)
    return op_model(lambda a, b: p3.apply(a) * torch.sin(b), name=name, dims={"N": Dim(1, 6, 4)},
                    inputs={"a": ("N",), "b": ("N",)}, scale_range=(0.1, 2.0),
                    reference=lambda a, b: 0.5 * (5 * a ** 3 - 3 * a) * torch.sin(b), **fields)


def test_a_backward_in_differentiable_torch_ops_passes_at_order_3():
    run = run_model(_tanh_layer("tanh3", order=3), examples=6)
    assert run.verdict == "pass", run.failure and run.failure.summary


def test_a_function_whose_backward_calls_another_function_passes_at_order_3():
    run = run_model(_two_inputs(15.0, "chain3", order=3), examples=6)
    assert run.verdict == "pass", run.failure and run.failure.summary


def test_a_third_derivative_wrong_by_a_factor_fails_at_order_3_naming_the_tensor():
    run = run_model(_two_inputs(15.0 * 1.1, "chain3_wrong", order=3), examples=6)
    assert run.verdict == "fail"
    assert run.failure.failing == ["a (third derivative)"]
    assert run.failure.summary.startswith("the third derivative of a (the backward differentiated twice) disagrees "
                                          "with the reference's third derivative")


def test_a_model_right_at_orders_1_and_2_but_wrong_at_3_is_caught_only_at_3():
    wrong = _two_inputs(15.0 * 1.1, "chain_wrong_at_3")
    assert run_model(wrong, examples=6).verdict == "pass"
    assert run_model(wrong, examples=6, order=2).verdict == "pass"
    run = run_model(wrong, examples=6, order=3)
    assert run.verdict == "fail" and run.failure.failing == ["a (third derivative)"]
    assert "--order 3" in run.failure.case.command()


def test_order_2_still_names_the_double_backward():
    def forward(p, d):
        y = torch.tanh(d.x @ p.w)
        return (y * d.t).sum(), y

    def backward(p, d, y, g):       # a detached cache: a constant to the second derivative
        return {"w": d.x.T @ (g * d.t * (1 - y.detach() ** 2))}

    m = Model(name="detached", dims={"N": Dim(1, 6, 4), "I": Dim(1, 5, 3), "O": Dim(1, 4, 2)}, params={"w": ("I", "O")},
              data={"x": ("N", "I"), "t": ("N", "O")}, forward=forward, backward=backward, order=3)
    run = run_model(m, examples=6)
    assert run.verdict == "fail" and run.failure.failing == ["w (double backward)"]   # order 2 decides first
    assert run.failure.summary.startswith("the double backward of w disagrees")


def test_order_and_double_backward_resolve_to_one_another():
    assert _tanh_layer("a").order == 1 and not _tanh_layer("a").double_backward
    assert _tanh_layer("b", double_backward=True).order == 2
    m = _tanh_layer("c", order=3)
    assert m.double_backward and m.order == 3
    assert _tanh_layer("d", double_backward=True, order=3).order == 3
    # double_backward=True over order 1 (the default, and what dataclasses.replace carries)
    assert _tanh_layer("e", double_backward=True, order=1).order == 2
    assert dataclasses.replace(_tanh_layer("f"), double_backward=True).order == 2


@pytest.mark.parametrize("fields, match", [
    (dict(order=0), "field 'order': must be a whole number, 1 or more"),
    (dict(order=2.0), "field 'order': must be a whole number"),
    (dict(order=True), "field 'order': must be a whole number"),
])
def test_a_bad_order_is_a_spec_error(fields, match):
    with pytest.raises(SpecError, match=match):
        _tanh_layer("bad", **fields)


def test_numpy_code_refuses_a_higher_order():
    from gradcheck_suite import numpy_model
    with pytest.raises(SpecError, match="field 'order': numpy code has no graph"):
        numpy_model(abs, abs, name="np", dims={"N": Dim(1, 2, 2)}, inputs={"x": ("N",)}, order=3)


def test_the_reproduce_command_carries_the_order():
    case = Case("m", {"N": 2}, "float64", "cpu", 1, 1.0, order=3)
    assert case.command().endswith("--order 3") and case.to_json()["order"] == 3
    assert "--order" not in Case("m", {"N": 2}, "float64", "cpu", 1, 1.0).command()


MODEL_FILE = '''
import torch
from gradcheck_suite import Dim, op_model


class DDP3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 15 * x

    @staticmethod
    def backward(ctx, g):
        return g * 16.5


class DP3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 1.5 * (5 * x ** 2 - 1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * DDP3.apply(x)


class P3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * (5 * x ** 3 - 3 * x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * DP3.apply(x)


model = op_model(P3, name="p3_wrong_third", dims={"N": Dim(1, 4, 4)}, inputs={"x": ("N",)},
                 scale_range=(0.1, 2.0), reference=lambda x: 0.5 * (5 * x ** 3 - 3 * x))
'''


def test_the_cli_order_overrides_the_records(tmp_path):
    path = tmp_path / "p3.py"
    path.write_text(MODEL_FILE)
    base = [sys.executable, "-m", "gradcheck_suite", "check", "p3_wrong_third", "--models-from", str(path),
            "--examples", "3", "--no-progress", "--no-isolate"]
    assert subprocess.run(base, capture_output=True, text=True).returncode == 0
    out = subprocess.run([*base, "--order", "3"], capture_output=True, text=True)
    assert out.returncode != 0 and "the third derivative of x" in out.stdout, out.stdout + out.stderr
    assert "--order 3" in out.stdout
    bad = subprocess.run([*base, "--order", "0"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--order 0: must be a whole number of at least 1" in bad.stdout + bad.stderr


def test_pytest_checks_the_order_of_its_option(pytester):
    pytester.makepyfile(test_grads="def test_backward(gradcheck_target):\n    gradcheck_target.check()\n")
    pytester.makepyfile(p3_model=MODEL_FILE)
    common = ("--gradcheck-device", "cpu", "--gradcheck-examples", "2", "--gradcheck-models-from", "p3_model.py")
    pytester.runpytest(*common).assert_outcomes(passed=1)
    result = pytester.runpytest(*common, "--gradcheck-order", "3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the third derivative of x*"])
