"""The stages of issue 26 catch a small error that shows on their path alone.

For each path (the op under torch.compile, a Function's ``jvp``, its ``vmap`` rule and
``generate_vmap_rule``, the backward under ``is_grads_batched``, an output left unused) a
Function of our own is right everywhere else and wrong on that path by a relative 1e-5 in
one element (its largest, so that the float32 bound, relative to the tensor's largest, is
met at its tightest): in float64 the case must fail naming the tensor and the path, and
its correct twin must pass, also at scale 1e-3 and 1e3, at size 1 and in float32.

Float32: the harness's float32 bound is ``rtol 2e-5 * |element| + atol 1e-5 * max |tensor|``
(``rules.TOLERANCES``), the same as the eager check's, so a relative 1e-5 is inside it on
every path as it is in eager; the float32 cases use 1e-4, the nearest power of ten above it
(3e-5 at the largest element).

The trigger of each path-only error is a stand-in for a bug only that path shows: torch
tells the code where it runs (``torch.compiler.is_compiling()``, a batched tensor of
``torch.func.vmap`` or of the older batching behind ``is_grads_batched``), as in
test_compiled.py."""
import pytest
import torch

from gradcheck_suite import Case, Dim, Model, op_model, run_model
from gradcheck_suite.check.pipeline import check_case
from gradcheck_suite.check.result import FAIL, PASS

SMALL = {"float64": 1e-5, "float32": 1e-4}
DIMS = {"N": Dim(low=1, high=5, bench=64), "F": Dim(low=1, high=5, bench=64)}
INPUTS = {"x": ("N", "F"), "w": ("F",)}


def bump(t: torch.Tensor, eps: float) -> torch.Tensor:
    """``t`` with its largest element (in magnitude) off by a relative ``eps``."""
    a = t.abs()
    return t * (1 + eps * (a == a.amax()).to(t.dtype))


def reference(x, w):
    return x * torch.sigmoid(w)


def _grads(x, w, g):
    s = torch.sigmoid(w)
    return g * s, (g * x * s * (1 - s)).sum(0)


def gated(name, *, backward_x=None, jvp=None, vmap=None, generate=False):
    """y = x * sigmoid(w), in the style torch.func takes (setup_context): ``backward_x(gx, g)``
    may change x's gradient; ``jvp`` and ``vmap`` are the Function's own when given."""

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gx, gw = _grads(x, w, g)
        return (gx if backward_x is None else backward_x(gx, g, x)), gw

    body = {"forward": staticmethod(reference), "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward)}
    if jvp is not None:
        body["jvp"] = staticmethod(jvp)
    if vmap is not None:
        body["vmap"] = staticmethod(vmap)
    if generate:
        body["generate_vmap_rule"] = True
    return type(name, (torch.autograd.Function,), body)


def model(fn, **fields):
    return op_model(fn, name=fn.__name__.lower(), dims=DIMS, inputs=INPUTS, reference=reference, **fields)


def case(m, dtype="float64", scale=1.0, N=3, F=4, seed=5, **fields):
    return Case(m.name, {"N": N, "F": F}, dtype, "cpu", seed, scale, {}, **fields)


def failed(res, failing, start):
    assert res.verdict == FAIL, (res.verdict, res.summary, res.problems)
    assert res.failing == [failing], res.failing
    assert res.summary.startswith(start), res.summary


#: the correct twins' cases: magnitudes far from 1, size 1, float32 (seed, scale, N, F, dtype)
TWIN_CASES = [(5, 1.0, 3, 4, "float64"), (5, 1e-3, 3, 4, "float64"), (6, 1e3, 3, 4, "float64"),
              (5, 1.0, 1, 1, "float64"), (5, 1.0, 3, 4, "float32"), (7, 1e-3, 2, 5, "float32"),
              (8, 1e3, 4, 3, "float32"), (5, 1.0, 1, 1, "float32")]


def passes(m, **fields):
    for seed, scale, n, f, dtype in TWIN_CASES:
        res = check_case(m, case(m, dtype, scale, n, f, seed, **fields))
        assert res.verdict == PASS, (seed, scale, n, f, dtype, res.summary, res.problems)


# -- the compiled stage ------------------------------------------------------------------------

def _compile_only(eps):
    def backward_x(gx, g, x):
        return bump(gx, eps) if torch.compiler.is_compiling() else gx
    return backward_x


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_catches_a_small_error_only_compile_shows(dtype):
    m = model(gated("CompiledSmall", backward_x=_compile_only(SMALL[dtype])))
    assert check_case(m, case(m, dtype)).verdict == PASS          # eager: right
    res = check_case(m, case(m, dtype, compile="aot_eager"))
    failed(res, "x under torch.compile (aot_eager)",
           "the manual gradient of x under torch.compile (aot_eager) differs from eager")


def test_compiled_passes_the_correct_twin():
    passes(model(gated("CompiledRight", backward_x=_compile_only(0.0))), compile="aot_eager")


def _plain(eps):
    def forward(p, d):
        return d["x"] * torch.sigmoid(p["w"]), None

    def backward(p, d, cache, g):
        s = torch.sigmoid(p["w"])
        gw = (g * d["x"] * s * (1 - s)).sum(0)
        return {"w": bump(gw, eps) if torch.compiler.is_compiling() else gw}

    return Model(name="plain_compiled", dims=DIMS, params={"w": ("F",)}, data={"x": ("N", "F")},
                 forward=forward, backward=backward)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_catches_a_small_error_in_a_plain_record(dtype):
    m = _plain(SMALL[dtype])
    assert check_case(m, case(m, dtype)).verdict == PASS
    failed(check_case(m, case(m, dtype, compile="aot_eager")), "w under torch.compile (aot_eager)",
           "the manual gradient of w under torch.compile (aot_eager) differs from eager")


def test_compiled_passes_the_plain_records_correct_twin():
    passes(_plain(0.0), compile="aot_eager")


# -- forward mode ------------------------------------------------------------------------------

def _jvp(eps):
    def jvp(ctx, tx, tw):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        return bump(tx * s + x * s * (1 - s) * tw, eps)
    return jvp


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_mode_catches_a_small_error_in_the_jvp(dtype):
    m = model(gated("JvpSmall", jvp=_jvp(SMALL[dtype])))
    res = check_case(m, case(m, dtype))
    failed(res, "x", "the forward-mode tangent (JvpSmall.jvp) of output 0 in the direction of x differs from "
                     "autograd's forward-mode tangent of the reference")     # x's direction is the first tried


def test_forward_mode_passes_the_correct_twin():
    passes(model(gated("JvpRight", jvp=_jvp(0.0))))


# -- batched: a Function's own vmap staticmethod, generate_vmap_rule, is_grads_batched ---------

def _rule(eps):
    def vmap(info, in_dims, x, w):
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(info.batch_size, *x.shape)
        w = w.movedim(in_dims[1], 0) if in_dims[1] is not None else w.expand(info.batch_size, *w.shape)
        out = x * torch.sigmoid(w).unsqueeze(1)
        return torch.cat([out[:1], bump(out[1:2], eps), out[2:]]), 0      # member 1 of the batch, one element
    return vmap


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batched_catches_a_small_error_in_a_vmap_staticmethod(dtype):
    m = model(gated("RuleSmall", vmap=_rule(SMALL[dtype])))
    failed(check_case(m, case(m, dtype)), "output 0 (under vmap)",
           "RuleSmall's output 0 under vmap (torch.vmap) differs from a loop of single calls")


def test_batched_passes_the_vmap_staticmethods_correct_twin():
    passes(model(gated("RuleRight", vmap=_rule(0.0))))


def _batched_inputs(eps):
    """Wrong where the saved input is batched: the backward under torch.vmap of the op (the
    generated rule's per-sample gradients), never for a batch of upstream gradients alone."""
    def backward_x(gx, g, x):
        return bump(gx, eps) if torch._C._functorch.is_batchedtensor(x) else gx
    return backward_x


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batched_catches_a_small_error_under_generate_vmap_rule(dtype):
    m = model(gated("GeneratedSmall", backward_x=_batched_inputs(SMALL[dtype]), generate=True))
    failed(check_case(m, case(m, dtype)), "x (under vmap)",
           "the gradient of x under vmap (per-sample gradients, the backward through torch.vmap of GeneratedSmall) "
           "differs from the same backward called per sample")


def test_batched_passes_the_generated_rules_correct_twin():
    passes(model(gated("GeneratedRight", backward_x=_batched_inputs(0.0), generate=True)))


def _legacy_batched(eps):
    """Wrong only under the batching behind ``is_grads_batched`` (torch.func.vmap's batched
    tensors are another kind).  On torch 2.13 we found no ordinary backward that is right per
    upstream gradient and under torch.func.vmap and silently wrong under is_grads_batched:
    views and reshapes of g, in-place ops on g, .item(), .data, numpy and out= are refused
    by both batchings alike, or run right in both (tests below keep two of them)."""
    def backward_x(gx, g, x):
        return bump(gx, eps) if torch._C._functorch.is_legacy_batchedtensor(g) else gx
    return backward_x


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batched_catches_a_small_error_only_is_grads_batched_shows(dtype):
    m = model(gated("GradsBatchedSmall", backward_x=_legacy_batched(SMALL[dtype])))
    failed(check_case(m, case(m, dtype)), "x (under vmap)",
           "the gradient of x under vmap (is_grads_batched) differs from the same backward called per sample")


def test_batched_passes_the_is_grads_batched_correct_twin():
    passes(model(gated("GradsBatchedRight", backward_x=_legacy_batched(0.0))))


def _reshaping(gx, g, x):
    """g viewed flat and back, written into in place: right under both batchings."""
    flat = g.reshape(-1).clone()
    flat.mul_(1.0)
    return gx + 0 * flat.view(x.shape)


def test_a_backward_that_reshapes_and_writes_into_g_passes_under_both_batchings():
    run = run_model(model(gated("Reshapes", backward_x=_reshaping)), examples=4)
    assert run.verdict == "pass", run.failure and run.failure.summary
    assert not [n for n in run.notes.values() if "vmap" in n], run.notes


def _flattening(gx, g, x):
    """``g.flatten()``: torch.func.vmap runs it, the older batching behind is_grads_batched
    raises (no batching rule for aten::flatten.using_ints): torch's refusal, a note."""
    return gx + 0 * g.flatten().view(x.shape)


def test_a_backward_is_grads_batched_refuses_is_a_note_naming_it():
    run = run_model(model(gated("Flattens", backward_x=_flattening)), examples=3)
    assert run.verdict == "pass", run.failure and run.failure.summary
    notes = [n for n in run.notes.values() if "is_grads_batched" in n]
    assert len(notes) == 1 and "flatten" in notes[0] and "not checked" in notes[0], run.notes


# -- unused outputs ----------------------------------------------------------------------------

def two_outputs(eps, materialize):
    """y1 = x * sigmoid(w), y2 = sin(x); x's gradient off by ``eps`` in one element where
    y2's gradient is absent: None after set_materialize_grads(False), else the zeros the
    engine passes (a fast path for a zero gradient, wrong)."""

    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(w), torch.sin(x)

    def forward_none(ctx, x, w):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(w), torch.sin(x)

    class TwoOut(torch.autograd.Function):
        @staticmethod
        def backward(ctx, g1, g2):
            x, w = ctx.saved_tensors
            s = torch.sigmoid(w)
            gx, gw = torch.zeros_like(x), torch.zeros_like(w)
            if g1 is not None:
                gx, gw = gx + g1 * s, gw + (g1 * x * s * (1 - s)).sum(0)
            if g2 is None or not bool(g2.any()):
                gx = bump(gx, eps)
            else:
                gx = gx + g2 * torch.cos(x)
            return gx, gw

    TwoOut.forward = staticmethod(forward if materialize else forward_none)
    kind = "none" if not materialize else "zeros"
    return op_model(TwoOut, name=f"two_out_{kind}", dims=DIMS, inputs=INPUTS,
                    reference=lambda x, w: (x * torch.sigmoid(w), torch.sin(x)))


@pytest.mark.parametrize("materialize", [False, True], ids=["none", "zeros"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_unused_outputs_catch_a_small_error_for_an_absent_gradient(dtype, materialize):
    m = two_outputs(SMALL[dtype], materialize)
    res = check_case(m, case(m, dtype))
    failed(res, "x (output 1 unused)", "the manual gradient of x is wrong with output 1 of 2 unused (its gradient "
           "as the engine passes it: None after ctx.set_materialize_grads(False), zeros otherwise)")


@pytest.mark.parametrize("materialize", [False, True], ids=["none", "zeros"])
def test_unused_outputs_pass_the_correct_twin(materialize):
    passes(two_outputs(0.0, materialize))
