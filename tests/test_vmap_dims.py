"""A Function's vmap rule with the batch elsewhere (gradcheck_suite.check.stages.batched): at
another dim than 0 of each input (``torch.vmap(f, in_dims=1)`` hands the rule in_dims=(1,)) and
with some inputs unbatched (per-sample gradients batch the data, not the weights).  Each wrong
rule passes with every input batched at dim 0, and must fail or error naming the in_dims."""
import torch

from gradcheck_suite import Case, Dim, op_model, run_model
from gradcheck_suite.check.pipeline import check_case
from gradcheck_suite.check.result import ERROR, FAIL, PASS

DIMS = {"N": Dim(low=1, high=5, bench=64), "F": Dim(low=1, high=5, bench=64)}
INPUTS = {"x": ("N", "F"), "w": ("F",)}


def reference(x, w):
    return x * torch.sigmoid(w)


def _function(name, *, vmap=None, generate=False):
    """y = x * sigmoid(w), x (N, F), w (F,), with a correct backward and the given vmap rule."""
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        return g * s, (g * x * s * (1 - s)).sum(-2)

    body = {
        "forward": staticmethod(lambda x, w: x * torch.sigmoid(w)),
        "setup_context": staticmethod(lambda ctx, inputs, output: ctx.save_for_backward(*inputs)),
        "backward": staticmethod(backward),
    }
    if generate:
        body["generate_vmap_rule"] = True
    if vmap is not None:
        body["vmap"] = staticmethod(vmap)
    return type(name, (torch.autograd.Function,), body)


def _model(fn, name, **kw):
    return op_model(fn, name=name, dims=kw.pop("dims", DIMS), inputs=kw.pop("inputs", INPUTS),
                    reference=kw.pop("reference", reference), **kw)


def case_of(model, seed=5, **dims):
    dims = dims or {"N": 3, "F": 4}
    return check_case(model, Case(model.name, dims, "float64", "cpu", seed, 1.0, {}))


def _front(t, d, size):
    """``t`` with its batch dim in front: moved from ``d``, or expanded where unbatched."""
    return t.movedim(d, 0) if d is not None else t.expand(size, *t.shape)


def test_a_rule_that_reads_in_dims_passes_at_every_in_dims_it_is_given():
    seen = []

    def rule(info, in_dims, x, w):
        seen.append(tuple(in_dims))
        x, w = _front(x, in_dims[0], info.batch_size), _front(w, in_dims[1], info.batch_size)
        return x * torch.sigmoid(w).unsqueeze(1), 0

    res = case_of(_model(_function("GatedRule", vmap=rule), "gated_rule"))
    assert res.verdict == PASS, res.summary
    # dim 0 of each; the last dim of each; the data batched alone; the weights batched alone
    assert {(0, 0), (2, 1), (0, None), (None, 0)} <= set(seen), seen
    run = run_model(_model(_function("GatedRule2", vmap=rule), "gated_rule2"), examples=6)
    assert run.verdict == "pass", run.failure and run.failure.summary
    assert not any("vmap" in n for n in run.notes.values()), run.notes


def test_a_rule_that_returns_out_dims_0_whatever_the_input_fails_naming_in_dims():
    # the batch of x is where x had it, and the rule says it is in front (dim 0): right only
    # while every input is batched at dim 0; the unbatched w broadcasts correctly
    def rule(info, in_dims, x, w):
        if in_dims[0] is None:
            x = x.expand(info.batch_size, *x.shape)
        return x * torch.sigmoid(w).unsqueeze(-2), 0

    for dims, verdict in (({"N": 3, "F": 1}, FAIL), ({"N": 3, "F": 4}, ERROR)):
        res = case_of(_model(_function("GatedFront", vmap=rule), "gated_front"), **dims)
        assert res.verdict == verdict, (dims, res.summary, res.problems)
        text = res.summary if res.verdict == FAIL else res.problems[0]
        assert "in_dims=(2, 1) over (x, w): x batched at its dim 2, w batched at its dim 1" in text, text
        assert "read in_dims" in text
        assert text.startswith("GatedFront's ")


def test_a_rule_that_assumes_every_input_batched_errors_naming_the_unbatched_input():
    def rule(info, in_dims, x, w):     # movedim(None, 0): torch raises inside the rule
        x, w = x.movedim(in_dims[0], 0), w.movedim(in_dims[1], 0)
        return x * torch.sigmoid(w).unsqueeze(1), 0

    res = case_of(_model(_function("GatedBoth", vmap=rule), "gated_both"))
    assert res.verdict == ERROR, res.summary
    text = res.problems[0]
    assert text.startswith("GatedBoth's vmap staticmethod raises TypeError (movedim()"), text
    assert "under torch.vmap with in_dims=(0, None) over (x, w): x batched at its dim 0, w unbatched" in text
    assert "does it read in_dims" in text


def test_a_rule_that_takes_an_unbatched_input_as_batched_fails_naming_it():
    # `in_dims[1] or 0`: an unbatched w is read as if its dim 0 were the batch; where the sizes
    # happen to broadcast, the values come out wrong without an exception
    def rule(info, in_dims, x, w):
        x, w = x.movedim(in_dims[0] or 0, 0), w.movedim(in_dims[1] or 0, 0)
        return x * torch.sigmoid(w).unsqueeze(1), 0

    res = case_of(_model(_function("GatedAlways", vmap=rule), "gated_always"), N=2, F=2)
    assert res.verdict == FAIL, (res.summary, res.problems)
    assert res.summary.startswith("GatedAlways's output 0 under vmap (torch.vmap with in_dims=(0, None) over "
                                  "(x, w): x batched at its dim 0, w unbatched (one value shared by the members)) "
                                  "differs from a loop of single calls"), res.summary
    res = case_of(_model(_function("GatedAlways", vmap=rule), "gated_always"), N=3, F=4)
    assert res.verdict == ERROR       # (2, 3, 4) * (4, 1): torch raises inside the rule
    assert "in_dims=(0, None) over (x, w): x batched at its dim 0, w unbatched" in res.problems[0]


def test_a_rule_that_refuses_an_unbatched_input_itself_is_a_note_not_a_failure():
    # NotImplementedError from the rule: the user says so, and torch raises it loudly in training
    def rule(info, in_dims, x, w):
        if None in in_dims:
            raise NotImplementedError("GatedStrict batches both inputs only")
        x, w = x.movedim(in_dims[0], 0), w.movedim(in_dims[1], 0)
        return x * torch.sigmoid(w).unsqueeze(1), 0

    run = run_model(_model(_function("GatedStrict", vmap=rule), "gated_strict"), examples=4)
    assert run.verdict == "pass", run.failure and run.failure.summary
    notes = [n for n in run.notes.values() if "vmap" in n]
    assert len(notes) == 1, run.notes
    assert "in_dims=(0, None)" in notes[0] and "GatedStrict batches both inputs only" in notes[0]
    assert "not checked" in notes[0]


def test_a_rule_that_drops_the_gradient_of_an_unbatched_input_fails_naming_it():
    # the value is right at every in_dims, but an unbatched w is taken as a constant: training's
    # per-sample gradients (weights unbatched) get no gradient for w
    def rule(info, in_dims, x, w):
        x = _front(x, in_dims[0], info.batch_size)
        w = w.movedim(in_dims[1], 0) if in_dims[1] is not None else w.detach().expand(info.batch_size, *w.shape)
        return x * torch.sigmoid(w).unsqueeze(1), 0

    res = case_of(_model(_function("GatedConst", vmap=rule), "gated_const"))
    assert res.verdict == FAIL, res.summary
    assert res.failing == ["w (under vmap)"]
    assert res.summary.startswith("the gradient of w through vmap (per-sample gradients, the backward through "
                                  "torch.vmap of GatedConst, torch.vmap with in_dims=(0, None) over (x, w)"), res.summary
    assert "differs from the sum of the same backward called per sample" in res.summary
    assert "does its vmap staticmethod read in_dims?" in res.summary


def test_a_rule_that_reads_only_the_first_inputs_in_dims_fails_or_errors_naming_in_dims():
    def rule(info, in_dims, x, w):     # reads in_dims[0] only: w is taken as batched at the same dim
        x = x.movedim(in_dims[0], 0)
        w = w.movedim(in_dims[0] + 1 if in_dims[0] else 0, 0) if in_dims[1] is not None else w
        return x * torch.sigmoid(w).unsqueeze(-2) if w.dim() > 1 else x * torch.sigmoid(w), 0

    res = case_of(_model(_function("GatedFirstOnly", vmap=rule), "gated_first_only"))
    assert res.verdict in (FAIL, ERROR)
    text = res.summary if res.verdict == FAIL else res.problems[0]
    assert "in_dims=(None, 0) over (x, w)" in text or "in_dims=(2, 1) over (x, w)" in text, text


def test_generate_vmap_rule_functions_pass_at_every_in_dims():
    run = run_model(_model(_function("GatedGen", generate=True), "gated_gen"), examples=6)
    assert run.verdict == "pass", run.failure and run.failure.summary
    assert not any("vmap" in n for n in run.notes.values()), run.notes

    class MatMulGen(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(a, b):
            return a @ b

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            return g @ b.transpose(-1, -2), a.transpose(-1, -2) @ g

    model = op_model(MatMulGen, name="matmul_gen", dims={"N": Dim(1, 4, 8), "K": Dim(1, 4, 8), "M": Dim(1, 4, 8)},
                     inputs={"a": ("N", "K"), "b": ("K", "M")}, reference=lambda a, b: a @ b)
    res = case_of(model, N=2, K=3, M=4)
    assert res.verdict == PASS, res.summary


class _Tanh(torch.autograd.Function):
    """One input, a rule that says out_dims 0 whatever in_dims[0] is (as attention-gym's softcap)."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)

    @staticmethod
    def vmap(info, in_dims, x):
        return torch.tanh(x), 0


class _TanhDims(_Tanh):
    @staticmethod
    def vmap(info, in_dims, x):
        return torch.tanh(x), in_dims[0]


def test_one_input_a_rule_with_fixed_out_dims_fails_at_the_last_dim_and_its_twin_passes():
    dims, inputs = {"M": Dim(1, 4, 8), "N": Dim(1, 4, 8)}, {"x": ("M", "N")}
    good = case_of(op_model(_TanhDims, name="tanh_dims", dims=dims, inputs=inputs, reference=torch.tanh), M=2, N=3)
    assert good.verdict == PASS, good.summary
    bad = case_of(op_model(_Tanh, name="tanh_front", dims=dims, inputs=inputs, reference=torch.tanh), M=2, N=3)
    assert bad.verdict in (FAIL, ERROR)
    text = bad.summary if bad.verdict == FAIL else bad.problems[0]
    assert "in_dims=(2,) over (x,): x batched at its dim 2" in text, text


def test_a_scalar_input_alone_has_no_other_dim_to_batch_at():
    from gradcheck_suite.check.stages.batched import _other_layouts
    assert _other_layouts(["x"], [torch.tensor(1.0)]) == []
    layouts = _other_layouts(["s", "x"], [torch.tensor(1.0), torch.zeros(2)])
    assert [lay.in_dims for lay in layouts] == [(0, 1), (0, None), (None, 0)]


def test_torchs_own_rule_gets_one_layout_beyond_dim_0():
    from gradcheck_suite.check.stages.batched import _other_layouts
    tensors = [torch.zeros(2, 3), torch.zeros(3), torch.zeros(())]
    assert [lay.in_dims for lay in _other_layouts(["x", "w", "s"], tensors, own=False)] == [(2, None, None)]
    assert [lay.in_dims for lay in _other_layouts(["x"], tensors[:1], own=False)] == [(2,)]
    assert _other_layouts(["s"], tensors[2:], own=False) == []


def test_a_generated_rule_whose_forward_writes_into_an_unbatched_value_gets_a_note_naming_in_dims():
    # torch documents an in-place write of a batched value into an unbatched tensor as
    # unsupported under vmap: with w unbatched the forward's buffer is unbatched, so a note
    class GatedInPlace(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x, w):
            out = torch.sigmoid(w).expand_as(x).clone()
            return out.mul_(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            s = torch.sigmoid(w)
            return g * s, (g * x * s * (1 - s)).sum(-2)

    run = run_model(_model(GatedInPlace, "gated_in_place"), examples=4)
    assert run.verdict == "pass", run.failure and run.failure.summary
    notes = [n for n in run.notes.values() if "vmap" in n]
    assert len(notes) == 1, run.notes
    assert "in_dims=(2, None)" in notes[0] and "not checked" in notes[0], notes[0]
