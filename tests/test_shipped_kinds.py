"""Code as it ships: autograd Functions, custom ops and numpy layers, correct and wrong."""
import importlib.util
import pathlib

import pytest
import torch

from gradcheck_suite import Case, Dim, Model, check_case, numpy_model, op_model
from gradcheck_suite import ERROR, FAIL, PASS
from gradcheck_suite.run.report import case_message
from gradcheck_suite import run_model
from tests.conftest import flat
from tests.shipped import wrong_kinds

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _example(stem):
    spec = importlib.util.spec_from_file_location(f"gradcheck_example_{stem}", EXAMPLES / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model


@pytest.fixture(scope="module")
def examples():
    return {m.name: m for m in map(_example, ["legendre_p3", "custom_op_softplus", "numpy_two_layer", "conv1d"])}


def _at(model, dims, hyper=None, seed=5, scale=1.0):
    return Case(model.name, dims, model.dtype, "cpu", seed, scale, hyper if hyper is not None else model.bench_hyper)


@pytest.mark.parametrize("name", ["legendre_p3", "scaled_softplus", "numpy_two_layer", "conv1d_strided"])
def test_each_example_passes_at_size_one_at_its_benchmark_size_and_on_generated_cases(examples, name):
    m = examples[name]
    for dims in ({k: 1 for k in m.dims}, m.bench_dims):
        res = check_case(m, _at(m, dims))
        assert res.verdict == PASS, (dims, res.verdict, res.problems, res.summary)
    run = run_model(m, examples=8)
    assert run.verdict == "pass", run.failure and case_message(run.failure)


@pytest.mark.parametrize("name", list(wrong_kinds.EXPECTED))
def test_each_wrong_kind_fails_and_names_the_input(name):
    model = next(m for m in wrong_kinds.models if m.name == name)
    verdict, text = wrong_kinds.EXPECTED[name]
    run = run_model(model, examples=10)
    assert run.verdict == verdict
    message = flat(case_message(run.failure))
    assert text in message
    assert f"reproduce: gradcheck-suite check {name} " in message


def test_the_wrong_kinds_are_right_at_size_one_where_their_bug_cannot_show():
    # the transposed product is invisible for a 1×1 weight: the checker must not cry wolf there
    m = next(m for m in wrong_kinds.models if m.name == "affine_np_transposed")
    assert check_case(m, _at(m, {"N": 3, "D": 1})).verdict == PASS


def test_a_forward_that_differs_from_its_reference_is_its_own_failure():
    m = op_model(wrong_kinds.P3ForgetsFactor, name="p3_vs_other", dims={"N": Dim(1, 4, 4)}, inputs={"x": ("N",)},
                 reference=lambda x: torch.where(torch.arange(x.numel()) == 2, x, wrong_kinds.p3(x)))
    res = check_case(m, _at(m, {"N": 4}))
    assert res.verdict == FAIL and res.failing == ["forward"]
    assert case_message(res).startswith("p3_vs_other: fail — forward differs from the reference at [2]")


def test_a_plain_model_with_a_hidden_function_is_judged_against_its_reference():
    # without `reference` autograd would run the Function's own backward; with it, the forward is plain torch
    m = Model(name="hidden_p3", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)},
              forward=lambda p, d: (wrong_kinds.P3ForgetsFactor.apply(p.w).sum(), None),
              backward=lambda p, d, c, g: {"w": g * (5 * p.w ** 2 - 1)},
              reference=lambda p, d: wrong_kinds.p3(p.w).sum())
    res = check_case(m, _at(m, {"N": 3}))
    assert res.verdict == FAIL and res.failing == ["w"]


class NotDeterministic(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @staticmethod
    def backward(ctx, g):
        NotDeterministic.calls += 1   # the first manual call, the call with its ctx, two more manual calls
        return 2 * g * (1.5 if NotDeterministic.calls == 4 else 1.0)


def test_the_backward_runs_several_times_and_must_agree():
    m = op_model(NotDeterministic, name="third_call_differs", dims={"N": Dim(1, 4, 4)}, inputs={"x": ("N",)},
                 reference=lambda x: 2 * x, backward_runs=3)
    NotDeterministic.calls = 0
    res = check_case(m, _at(m, {"N": 2}))
    assert res.verdict == ERROR
    assert "backward gives another result when called 3 times" in res.problems[0]


def _gated(x, w):
    return x * torch.sigmoid(w), torch.tanh(x)


def test_several_outputs_get_one_upstream_gradient_each():
    def backward(p, d, cache, g, *, ignore_second=False):
        g1, g2 = g
        s = torch.sigmoid(p.w)
        gx = g1 * s + (0 if ignore_second else g2 * (1 - torch.tanh(p.x) ** 2))
        return {"x": gx, "w": (g1 * p.x * s * (1 - s)).sum(0)}

    common = dict(dims={"N": Dim(1, 6, 8), "F": Dim(1, 6, 8)}, params={"x": ("N", "F"), "w": ("F",)},
                  forward=lambda p, d: (_gated(p.x, p.w), None), reference=lambda p, d: _gated(p.x, p.w))
    good = Model(name="two_outputs", backward=backward, **common)
    bad = Model(name="two_outputs_bad", backward=lambda *a: backward(*a, ignore_second=True), **common)
    assert run_model(good, examples=8).verdict == "pass"
    run = run_model(bad, examples=8)
    assert run.verdict == "fail" and run.failure.failing == ["x"]


def test_numpy_without_a_reference_is_a_two_way_check_and_says_so():
    m = numpy_model(lambda x, w: (x @ w, (x, w)), lambda dout, c: (dout @ c[1].T, c[0].T @ dout), name="np_two_way",
                    dims={"N": Dim(1, 4, 4), "D": Dim(1, 4, 4)}, inputs={"x": ("N", "D"), "w": ("D", "D")})
    assert m.two_way
    res = check_case(m, _at(m, {"N": 3, "D": 40}))   # w has more elements than are probed one by one
    assert res.verdict == PASS
    assert "finite differences alone (a two-way verdict)" in res.notes[0]
    run = run_model(m, examples=4)
    assert run.verdict == "pass" and run.two_way


def test_numpy_contract_mistakes_are_one_line_errors():
    m = numpy_model(lambda x, w: (x @ w, None), lambda dout, c: (dout,), name="np_short",
                    dims={"N": Dim(1, 4, 4)}, inputs={"x": ("N", "N"), "w": ("N", "N")})
    res = check_case(m, _at(m, {"N": 2}))
    assert res.verdict == ERROR
    assert res.problems == ["<lambda> returned 1; the record expects 2 gradients in the order x, w"]


def _twice_op(name, fake):
    @torch.library.custom_op(f"gradcheck_tests::{name}", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    twice.register_fake(fake)
    twice.register_autograd(lambda ctx, g: 2 * g, setup_context=lambda ctx, inputs, output: None)
    return op_model(twice, name=name, dims={"N": Dim(1, 4, 4)}, inputs={"x": ("N",)}, reference=lambda x: 2 * x,
                    opcheck=True)


def test_opcheck_is_an_option_for_custom_ops_and_its_failure_is_one_line():
    assert run_model(_twice_op("twice_ok", lambda x: torch.empty_like(x)), examples=2).verdict == "pass"
    run = run_model(_twice_op("twice_bad_fake", lambda x: x.new_empty(x.shape[0] + 1)), examples=2)
    assert run.verdict == "error"
    assert run.failure.problems[0].startswith("torch.library.opcheck failed: ")
    assert "\n" not in run.failure.problems[0]
    with pytest.raises(Exception, match="field 'opcheck': torch.library.opcheck tests torch.library custom ops only"):
        op_model(wrong_kinds.P3ForgetsFactor, name="not_custom", dims={"N": Dim(1, 2, 2)}, inputs={"x": ("N",)}, reference=abs, opcheck=True)


def _tanh_model(name, detach_cache):
    def forward(p, d):
        y = torch.tanh(d.x @ p.w)
        return (y * d.t).sum(), y

    def backward(p, d, y, g):
        y = y.detach() if detach_cache else y      # a detached cache is a constant to a second derivative
        gz = g * d.t * (1 - y * y)
        return {"w": d.x.T @ gz}

    return Model(name=name, dims={"N": Dim(1, 6, 8), "I": Dim(1, 6, 8), "O": Dim(1, 4, 4)}, params={"w": ("I", "O")},
                 data={"x": ("N", "I"), "t": ("N", "O")}, forward=forward, backward=backward, double_backward=True)


def test_a_plain_model_can_opt_in_to_double_backward_too():
    assert run_model(_tanh_model("tanh_layer", False), examples=8).verdict == "pass"
    run = run_model(_tanh_model("tanh_layer_detached", True), examples=8)
    assert run.verdict == "fail" and run.failure.failing == ["w (double backward)"]
    assert case_message(run.failure).startswith("tanh_layer_detached: fail — the double backward of w disagrees")


class SinCos(torch.autograd.Function):
    """Two outputs and a non-tensor argument k; the backward gets one gradient per output."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return torch.sin(k * x), torch.cos(k * x)

    @staticmethod
    def backward(ctx, g_sin, g_cos):
        (x,) = ctx.saved_tensors
        return ctx.k * (g_sin * torch.cos(ctx.k * x) - g_cos * torch.sin(ctx.k * x)), None


class SinCosDropsSecond(SinCos):
    @staticmethod
    def backward(ctx, g_sin, g_cos):
        (x,) = ctx.saved_tensors
        return ctx.k * g_sin * torch.cos(ctx.k * x), None


@pytest.mark.parametrize("fn, verdict", [(SinCos, "pass"), (SinCosDropsSecond, "fail")])
def test_a_function_with_two_outputs_and_a_drawn_argument(fn, verdict):
    m = op_model(fn, name="sin_cos", dims={"N": Dim(1, 8, 8)}, inputs={"x": ("N",)}, hyper={"k": (1, 2, 3)},
                 reference=lambda x, k: (torch.sin(k * x), torch.cos(k * x)))
    run = run_model(m, examples=6)
    assert run.verdict == verdict
    if verdict == "fail":
        assert run.failure.failing == ["x"] and "--hyper k=" in case_message(run.failure)
