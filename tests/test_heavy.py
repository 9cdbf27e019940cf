"""The costly stages a profile or option adds (torch.compile, a custom op's opcheck) run on
the first case of each shape, up to ``rules.HEAVY_SHAPES`` shapes a model, and on every case
once the run has failed, so that a failure they find still shrinks."""
import pytest
import torch
from hypothesis.database import InMemoryExampleDatabase

from gradcheck_suite import Dim, op_model, run_model
from gradcheck_suite.run import runner
from gradcheck_suite.verdict import rules


class Scaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * torch.tanh(w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        t = torch.tanh(w)
        gw = g * x * (1 - t * t)
        if torch.compiler.is_compiling():      # right in eager, wrong as the compiler traces it
            gw = gw * (1 + 1e-5)
        return g * t, gw


class Right(Scaled):
    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        t = torch.tanh(w)
        return g * t, g * x * (1 - t * t)


def _op(fn, name, **fields):
    # two shapes only: N is 1 or 2, F is 3
    return op_model(fn, name=name, dims={"N": Dim(1, 2, 2), "F": Dim(3, 3, 3)},
                    inputs={"x": ("N", "F"), "w": ("N", "F")}, reference=lambda x, w: x * torch.tanh(w), **fields)


@pytest.fixture
def cases(monkeypatch):
    """Each case the runner judges, as (compiled?, opcheck by the profile?)."""
    seen = []
    real = runner.run_case

    def spy(model, case, **kw):
        seen.append((case.compile, bool(getattr(model.op, "by_profile", False)), tuple(case.dims.values())))
        return real(model, case, **kw)

    monkeypatch.setattr(runner, "run_case", spy)
    return seen


def test_compile_runs_once_per_shape(cases):
    run = run_model(_op(Right, "heavy_right"), compile="aot_eager", examples=8)
    assert run.verdict == "pass", run.failure and run.failure.summary
    compiled = [c for c in cases if c[0] is not None]
    assert len(cases) > len(compiled) == len({c[2] for c in cases}) == 2


def test_the_shapes_are_capped(cases, monkeypatch):
    monkeypatch.setattr(rules, "HEAVY_SHAPES", 1)
    run_model(_op(Right, "heavy_capped"), compile="aot_eager", examples=8)
    assert len([c for c in cases if c[0] is not None]) == 1


def test_a_failure_found_under_compile_is_seen_by_every_later_case(cases):
    run = run_model(_op(Scaled, "heavy_bug"), compile="aot_eager", examples=8)
    assert run.verdict == "fail"
    assert "under torch.compile (aot_eager)" in run.failure.summary
    assert "--compile aot_eager" in run.failure.case.command()
    first = next(i for i, c in enumerate(cases) if c[0] is not None)
    after = cases[first + 1:]
    assert after and all(c[0] is not None for c in after)      # shrinking compiles every case


def test_nightly_opcheck_runs_once_per_shape(cases):
    @torch.library.custom_op("gradcheck_heavy_tests::tanh_scale", mutates_args=())
    def tanh_scale(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(w)

    tanh_scale.register_fake(lambda x, w: torch.empty_like(x))
    tanh_scale.register_autograd(
        lambda ctx, g: (g * torch.tanh(ctx.w), g * ctx.x * (1 - torch.tanh(ctx.w) ** 2)),
        setup_context=lambda ctx, inputs, output: (setattr(ctx, "x", inputs[0]), setattr(ctx, "w", inputs[1])))
    model = _op(tanh_scale, "heavy_op", compile=False)
    run = run_model(model, profile="nightly", examples=8, database=InMemoryExampleDatabase())
    assert run.verdict == "pass", run.failure and (run.failure.summary or run.failure.problems)
    checked = [c for c in cases if c[1]]
    assert len(cases) > len(checked) == len({c[2] for c in cases}) == 2
