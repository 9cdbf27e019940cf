"""The backward under vmap (gradcheck_suite.check.stages.batched): per-sample gradients,
``is_grads_batched`` and a Function's own vmap rule, each wrong one against its correct twin."""
import torch

from gradcheck_suite import Case, Dim, op_model, run_model
from gradcheck_suite.check.pipeline import check_case
from gradcheck_suite.check.result import ERROR, FAIL, PASS

DIMS = {"N": Dim(low=1, high=6, bench=64), "F": Dim(low=1, high=6, bench=64)}
INPUTS = {"x": ("N", "F"), "w": ("F",)}


def reference(x, w):
    return x * torch.sigmoid(w)


def _backward(ctx, g):
    x, w = ctx.saved_tensors
    s = torch.sigmoid(w)
    return g * s, (g * x * s * (1 - s)).sum(0)


def _function(name, *, generate=False, vmap=None, backward=_backward):
    """A Function for y = x * sigmoid(w), in the style torch.func needs (setup_context)."""
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


def _model(fn, name):
    return op_model(fn, name=name, dims=DIMS, inputs=INPUTS, reference=reference)


def case_of(model, seed=5, N=3, F=4):
    return check_case(model, Case(model.name, {"N": N, "F": F}, "float64", "cpu", seed, 1.0, {}))


def test_a_correct_function_with_generate_vmap_rule_passes():
    run = run_model(_model(_function("Gated", generate=True), "gated"), examples=6)
    assert run.verdict == "pass", run.failure and run.failure.summary
    assert not any("vmap" in n for n in run.notes.values())


def test_a_correct_vmap_staticmethod_passes():
    def rule(info, in_dims, x, w):
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(info.batch_size, *x.shape)
        w = w.movedim(in_dims[1], 0) if in_dims[1] is not None else w.expand(info.batch_size, *w.shape)
        return x * torch.sigmoid(w).unsqueeze(1), 0

    res = case_of(_model(_function("GatedRule", vmap=rule), "gated_rule"))
    assert res.verdict == PASS, res.summary


def test_a_vmap_staticmethod_with_a_wrong_value_fails_naming_the_output_under_vmap():
    def rule(info, in_dims, x, w):       # right shape, but the members' gates taken from the first one
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(info.batch_size, *x.shape)
        w = w.movedim(in_dims[1], 0) if in_dims[1] is not None else w.expand(info.batch_size, *w.shape)
        return x * torch.sigmoid(w[:1]).unsqueeze(1), 0

    res = case_of(_model(_function("GatedFirst", vmap=rule), "gated_first"))
    assert res.verdict == FAIL
    assert "under vmap (torch.vmap) differs from a loop of single calls" in res.summary
    assert res.failing == ["output 0 (under vmap)"]


def test_a_vmap_staticmethod_with_wrong_out_dims_fails_or_errors():
    def rule(info, in_dims, x, w):       # says the output is not batched: torch broadcasts it
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(info.batch_size, *x.shape)
        w = w.movedim(in_dims[1], 0) if in_dims[1] is not None else w.expand(info.batch_size, *w.shape)
        return x * torch.sigmoid(w).unsqueeze(1), None

    res = case_of(_model(_function("GatedNone", vmap=rule), "gated_none"))
    assert res.verdict == FAIL
    assert "has shape" in res.summary and "out_dims" in res.summary

    def tuple_rule(info, in_dims, x, w):   # out_dims of another structure than the output: torch rejects it
        return rule(info, in_dims, x, w)[0], (0, 0)

    res = case_of(_model(_function("GatedTuple", vmap=tuple_rule), "gated_tuple"))
    assert res.verdict == ERROR
    assert "vmap staticmethod" in res.problems[0]


class _MixBatch(torch.autograd.Function):
    """Inside the backward: g * s, with a vmap rule that sums g over dim 0, the batch dim."""

    @staticmethod
    def forward(g, s):
        return g * s

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, gg):
        return None, None

    @staticmethod
    def vmap(info, in_dims, g, s):
        g = g.movedim(in_dims[0], 0) if in_dims[0] is not None else g.expand(info.batch_size, *g.shape)
        return g.sum(0, keepdim=True).expand_as(g) * s, 0      # wrong: mixes the members of the batch


class _ScaleOK(torch.autograd.Function):
    @staticmethod
    def forward(g, s):
        return g * s

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, gg):
        return None, None

    generate_vmap_rule = True


def _mixing(inner):
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        return inner.apply(g, s), (g * x * s * (1 - s)).sum(0)
    return backward


def test_a_backward_that_mixes_the_batch_under_vmap_fails_naming_the_tensor():
    good = case_of(_model(_function("Scaled", backward=_mixing(_ScaleOK)), "scaled"))
    assert good.verdict == PASS, good.summary
    res = case_of(_model(_function("Mixed", backward=_mixing(_MixBatch)), "mixed"))
    assert res.verdict == FAIL
    assert res.failing == ["x (under vmap)"]
    assert res.summary.startswith("the gradient of x under vmap (torch.func.vmap over the upstream gradient) "
                                  "differs from the same backward called per sample")


class _Old(torch.autograd.Function):
    """No setup_context and no vmap rule: torch.vmap refuses it; the backward uses .item()."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        top = g.abs().max().item() or 1.0           # no batching rule for .item(): unsupported under vmap
        return g / top * top * s, (g * x * s * (1 - s)).sum(0)


class _Plain(torch.autograd.Function):
    """No vmap rule at all, and a backward that runs under vmap."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(w)

    @staticmethod
    def backward(ctx, g):
        return _backward(ctx, g)


def test_a_function_without_a_vmap_rule_passes_without_a_note():
    # torch documents vmap over such a Function as unsupported: most Functions, nothing to say
    run = run_model(_model(_Plain, "plain"), examples=4)
    assert run.verdict == "pass"
    assert not [n for n in run.notes.values() if "vmap" in n], run.notes


def test_a_backward_torch_cannot_batch_passes_with_one_note():
    run = run_model(_model(_Old, "old"), examples=4)
    assert run.verdict == "pass", run.failure and run.failure.summary
    notes = [n for n in run.notes.values() if "under vmap" in n]
    assert len(notes) == 1
    assert "not checked" in notes[0] and ".item()" in notes[0]


def test_a_record_can_leave_the_stage_out():
    model = op_model(_function("MixedOff", backward=_mixing(_MixBatch)), name="mixed_off", dims=DIMS,
                     inputs=INPUTS, reference=reference, batched=False)
    assert case_of(model).verdict == PASS


class _Inner(torch.autograd.Function):
    """No vmap rule: torch.vmap refuses it wherever it is called."""

    @staticmethod
    def forward(x):
        return torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return g * s * (1 - s)


def test_a_function_whose_forward_calls_one_torch_cannot_vmap_is_a_note_not_an_error():
    fn = _function("GatedInner", generate=True)
    fn.forward = staticmethod(lambda x, w: x * _Inner.apply(w))
    run = run_model(_model(fn, "gated_inner"), examples=3)
    assert run.verdict == "pass", run.failure and run.failure.summary
    notes = [n for n in run.notes.values() if "vmap" in n]
    assert len(notes) == 1 and "does not have vmap support" in notes[0] and "not checked" in notes[0]


class _Data(torch.autograd.Function):
    """A backward that reads g.data: the batching behind is_grads_batched crashes the process on
    it (torch 2.13), torch.func.vmap refuses it; the stage must take the refusal."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        g = g.data
        return g * s, (g * x * s * (1 - s)).sum(0)


def test_a_backward_reading_g_data_is_a_note_and_no_crash():
    run = run_model(_model(_Data, "reads_data"), examples=3)
    assert run.verdict == "pass", run.failure and run.failure.summary
    notes = [n for n in run.notes.values() if "under vmap" in n]
    assert len(notes) == 1 and "accessing `data` under vmap transform is not allowed" in notes[0]


def test_a_vmap_staticmethod_that_detaches_its_output_fails_on_the_per_sample_gradients():
    def rule(info, in_dims, x, w):       # the right values, cut off from the gradient
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x.expand(info.batch_size, *x.shape)
        w = w.movedim(in_dims[1], 0) if in_dims[1] is not None else w.expand(info.batch_size, *w.shape)
        return (x * torch.sigmoid(w).unsqueeze(1)).detach(), 0

    res = case_of(_model(_function("GatedDetached", vmap=rule), "gated_detached"))
    assert res.verdict == FAIL
    assert res.failing == ["x (under vmap)"]
    assert res.summary.startswith("the gradient of x under vmap (per-sample gradients, the backward through "
                                  "torch.vmap of GatedDetached) differs from the same backward called per sample")
