"""The compiled stage (check/stages/compiled.py): the case again under torch.compile, its
output and manual gradient against eager's.  Opt-in: ``--compile``, a record's
``compile=True``, the nightly profile; never in the quick profile unless asked for."""
import pytest
import torch

from gradcheck_suite import Dim, Model, op_model, run_model
from gradcheck_suite.check.case import Case
from gradcheck_suite.check.pipeline import check_case

ONE = dict(dims={"N": 3, "F": 4}, seed=3, scale=1.0)


class Scaled(torch.autograd.Function):
    """y = x * sigmoid(w), its backward by hand (the torch.func style: setup_context)."""

    @staticmethod
    def forward(x, w):
        return x * torch.sigmoid(w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        return g * s, g * x * s * (1 - s)


class CompileOnlyBug(torch.autograd.Function):
    """Right in eager; under torch.compile its backward scales w's gradient: a stand-in for
    a bug that only a compiler shows (is_compiling() is True while torch traces it)."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        gw = g * x * s * (1 - s)
        if torch.compiler.is_compiling():
            gw = gw * 1.5
        return g * s, gw


def _op(fn, **fields):
    return op_model(fn, name=fn.__name__.lower(), dims={"N": Dim(1, 6, 4), "F": Dim(1, 6, 4)},
                    inputs={"x": ("N", "F"), "w": ("N", "F")}, reference=lambda x, w: x * torch.sigmoid(w),
                    **fields)


def _fwd_break(p, d):
    h = p.w * d.x
    torch._dynamo.graph_break()          # dynamo splits the graph here
    return (h * h).sum(), h


def _bwd(p, d, cache, g):
    return {"w": 2 * g * cache * d.x}


def _bwd_compile_bug(p, d, cache, g):
    scale = 2.0 if torch.compiler.is_compiling() else 1.0
    return {"w": 2 * g * cache * d.x * scale}


def _fwd(p, d):
    h = p.w * d.x
    return (h * h).sum(), h


def _record(forward, backward, name, **fields):
    return Model(name=name, dims={"N": Dim(1, 6, 4), "F": Dim(1, 6, 4)}, params={"w": ("N", "F")},
                 data={"x": ("N", "F")}, forward=forward, backward=backward, **fields)


def test_a_correct_function_passes_under_compile():
    run = run_model(_op(Scaled), compile="aot_eager", **ONE)
    assert run.verdict == "pass", run.failure and run.failure.summary
    assert not any("compile" in k for k in run.notes), run.notes


def test_a_function_wrong_only_under_compile_fails_naming_the_tensor_and_the_backend():
    bug = _op(CompileOnlyBug)
    assert run_model(bug, **ONE).verdict == "pass"           # eager: right
    run = run_model(bug, compile="aot_eager", **ONE)
    assert run.verdict == "fail"
    assert run.failure.summary.startswith("the manual gradient of w under torch.compile (aot_eager) differs from eager")
    assert run.failure.failing == ["w under torch.compile (aot_eager)"]
    assert "--compile aot_eager" in run.failure.case.command()


def test_a_plain_record_wrong_only_under_compile_fails():
    run = run_model(_record(_fwd, _bwd_compile_bug, "plain_bug"), compile="aot_eager", **ONE)
    assert run.verdict == "fail"
    assert "the manual gradient of w under torch.compile (aot_eager) differs from eager" in run.failure.summary


def test_a_graph_break_passes_with_a_note_naming_it():
    run = run_model(_record(_fwd_break, _bwd, "plain_break"), compile="aot_eager", **ONE)
    assert run.verdict == "pass", run.failure and run.failure.summary
    note = run.notes["compile graph break"]
    assert "torch.compile (aot_eager) broke the graph" in note and "graph_break" in note


def test_the_quick_profile_does_not_compile_unless_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: calls.append(1) or (lambda f: f))
    run = run_model(_op(CompileOnlyBug), examples=3)
    assert run.verdict == "pass" and calls == []


def test_a_record_opts_in_and_out_whatever_the_profile():
    assert run_model(_op(CompileOnlyBug, compile=True), **ONE).verdict == "fail"
    assert run_model(_op(CompileOnlyBug, compile=False), compile="aot_eager", **ONE).verdict == "pass"


def test_the_nightly_profile_compiles():
    from gradcheck_suite.check.stages.compiled import backend_for
    assert backend_for(_op(Scaled), "nightly", None) == "aot_eager"
    assert backend_for(_op(Scaled), "quick", None) is None
    assert backend_for(_op(Scaled), "quick", "inductor") == "inductor"
    assert backend_for(_op(Scaled, compile=False), "nightly", "aot_eager") is None


def test_float32_passes_under_compile():
    run = run_model(_op(Scaled), dtype="float32", compile="aot_eager", **ONE)
    assert run.verdict == "pass", run.failure and run.failure.summary


class CtxStyle(torch.autograd.Function):
    """A correct Function in the older style (forward takes ctx): torch.func refuses it."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        return g * s, g * x * s * (1 - s)


def test_torch_func_refusing_a_function_is_a_note_not_a_failure():
    run = run_model(_op(CtxStyle), compile="aot_eager", **ONE)
    assert run.verdict == "pass", run.failure and run.failure.summary
    assert "setup_context" in run.notes["compile func"]


@torch.library.custom_op("gradcheck_test_compiled::no_fake", mutates_args=())
def no_fake(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(w)


def _no_fake_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _no_fake_backward(ctx, g):
    x, w = ctx.saved_tensors
    s = torch.sigmoid(w)
    return g * s, g * x * s * (1 - s)


no_fake.register_autograd(_no_fake_backward, setup_context=_no_fake_setup)


def test_an_error_inside_torchs_compiler_is_a_note_naming_torchs_message():
    m = op_model(no_fake, name="no_fake", dims={"N": Dim(1, 6, 4), "F": Dim(1, 6, 4)},
                 inputs={"x": ("N", "F"), "w": ("N", "F")}, reference=lambda x, w: x * torch.sigmoid(w))
    run = run_model(m, compile="aot_eager", **ONE)
    assert run.verdict == "pass", run.failure and run.failure.summary
    note = next(v for k, v in run.notes.items() if k.startswith("compile error"))
    assert "torch.compile (aot_eager) could not run the op" in note and "register_fake" in note


BUG_FILE = '''
import torch
from gradcheck_suite import Dim, op_model


class CompileOnlyBug(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.sigmoid(w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        s = torch.sigmoid(w)
        gw = g * x * s * (1 - s)
        if torch.compiler.is_compiling():
            gw = gw * 1.5
        return g * s, gw


model = op_model(CompileOnlyBug, name="compile_only_bug", dims={"N": Dim(1, 4, 4)},
                 inputs={"x": ("N",), "w": ("N",)}, reference=lambda x, w: x * torch.sigmoid(w))
'''


def test_pytest_compiles_only_with_its_option(pytester):
    pytester.makepyfile(test_grads="def test_backward(gradcheck_target):\n    gradcheck_target.check()\n")
    pytester.makepyfile(bug_model=BUG_FILE)
    common = ("--gradcheck-device", "cpu", "--gradcheck-examples", "1", "--gradcheck-models-from", "bug_model.py")
    # the compiled run first: pytester drops the model's module after a run, and dynamo reads it
    result = pytester.runpytest(*common, "--gradcheck-compile")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the manual gradient of w under torch.compile", "*(aot_eager) differs from eager*"])
    pytester.runpytest(*common).assert_outcomes(passed=1)
