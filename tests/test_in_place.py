"""Whether an op changes an input in place and marks it dirty is found by calling it, not
by reading its source: a comment that mentions ``mark_dirty`` in a Function that does not
call it must not make the checks call it on copies (which would hide the unmarked change),
and a Function that does call it must be checked on copies even behind a wrapper or a
helper function."""
import torch

from gradcheck_suite import Dim, op_model, run_model

DIMS = {"N": Dim(1, 5, 3), "C": Dim(1, 5, 4)}


def _mark(ctx, x):
    ctx.mark_dirty(x)


class ExpInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x.exp_()
        _mark(ctx, x)          # through a helper: nothing in forward's own source says so
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * y


class ExpUnmarked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x.exp_()               # changes x in place; the call that should follow (ctx.mark_dirty(x)) is missing
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        return g * y


def _record(op, name):
    return op_model(op, name=name, dims=DIMS, inputs={"x": ("N", "C")}, reference=torch.exp,
                    scale_range=(1e-3, 2.0))


def test_a_function_marking_dirty_through_a_helper_is_checked_on_copies():
    run = run_model(_record(ExpInPlace, "exp_helper_marked"), examples=4)
    assert run.verdict == "pass", run.failure and (run.failure.summary or run.failure.problems)


def test_a_wrapper_around_a_function_marking_dirty_is_checked_on_copies():
    run = run_model(_record(lambda x: ExpInPlace.apply(x), "exp_wrapped_marked"), examples=4)
    assert run.verdict == "pass", run.failure and (run.failure.summary or run.failure.problems)


def test_a_comment_naming_mark_dirty_does_not_hide_an_unmarked_change():
    run = run_model(_record(ExpUnmarked, "exp_unmarked"), examples=2)
    assert run.verdict == "error"
    assert run.failure.problems[0].startswith(
        "the op's forward changed its input x in place without ctx.mark_dirty(x)"), run.failure.problems
