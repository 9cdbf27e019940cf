"""Correct backwards must pass: at the seeds' sizes, in float32, at large and tiny
magnitudes, and at kinks and ties (reported as non-differentiable, never as failures)."""
import dataclasses

import pytest
import torch

from gradcheck_suite import Dim, Model, check_case
from gradcheck_suite import PASS
from gradcheck_suite import run_model

SEED_MODELS = ["scalar_linear", "affine_scalar", "two_layer_scalar", "linear_regression", "linear_layer",
               "deep_linear", "mlp_relu", "mlp_sequential", "two_layer_net"]


def test_every_seed_model_is_registered(registry):
    assert sorted(registry.names()) == sorted(SEED_MODELS)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", SEED_MODELS)
def test_passes_at_the_seed_size(registry, case_of, name, dtype):
    m = registry.get(name)
    res = check_case(m, case_of(m, dtype=dtype, seed=11, **m.bench_dims))
    assert res.verdict == PASS, res.problems + res.notes


@pytest.mark.parametrize("name", SEED_MODELS)
def test_passes_in_float32_on_generated_cases(registry, name):
    run = run_model(registry.get(name), dtype="float32", examples=10)
    assert run.verdict == "pass", run.failure and run.failure.problems
    assert run.checked + run.skipped + run.nondiff >= 10


@pytest.mark.parametrize("scale", [1e-3, 1e3])
@pytest.mark.parametrize("name", SEED_MODELS)
def test_no_false_alarm_at_extreme_magnitudes(registry, case_of, name, scale):
    m = registry.get(name)
    dims = {k: min(d.high, 7) for k, d in m.dims.items()}
    for dtype in ("float64", "float32"):
        res = check_case(m, case_of(m, dtype=dtype, seed=4, scale=scale, **dims))
        assert res.ok, (dtype, res.verdict, res.problems)


def _zero_column(model):
    def make(dims, gen, dtype, scale):
        t = {n: scale * torch.randn(model.shape(n, dims), generator=gen, dtype=torch.float64)
             for n in (*model.params, *model.data)}
        t["w1"][:, 0] = 0.0  # hidden unit 0 sits exactly on the ReLU kink for every sample
        return t
    return dataclasses.replace(model, make_tensors=make)


def test_relu_kink_elements_are_set_aside_and_the_rest_decides(registry, case_of):
    m = _zero_column(registry.get("mlp_relu"))
    for dims in ({"N": 8, "D_in": 6, "H": 5, "D_out": 3}, registry.get("mlp_relu").bench_dims):
        res = check_case(m, case_of(m, seed=3, **dims))
        assert res.verdict == PASS, (res.verdict, res.problems)
        assert any("kink or tie set aside" in n for n in res.notes), res.notes
        assert res.tensors["w1"].mismatched == dims["D_in"]  # (h > 0) and clamp's 1 at 0 differ there
        assert all(e.kink for e in res.tensors["w1"].worst)


def test_a_bug_beside_a_kink_is_still_caught(registry, case_of):
    base = registry.get("mlp_relu")
    m = _zero_column(base)

    def backward(p, d, cache, g):
        out = base.backward(p, d, cache, g)
        return {**out, "w2": out["w2"] * 1.01}

    res = check_case(dataclasses.replace(m, backward=backward), case_of(m, seed=3, N=8, D_in=6, H=5, D_out=3))
    assert res.verdict == "fail" and res.failing == ["w2"]


def _first_max(z):
    return (z == z.amax(dim=-1, keepdim=True)).to(torch.int64).argmax(dim=-1)


def test_ties_in_a_max_pool_window_are_not_a_failure(case_of):
    """Max over windows of 4 whose values repeat; the backward gives a tie's gradient to
    its first element, autograd spreads it evenly: both are valid, neither is a failure."""

    def forward(p, d):
        return (d.x * p.w).amax(dim=2), None

    def backward(p, d, cache, g):
        z = d.x * p.w
        gz = torch.zeros_like(z).scatter_(2, _first_max(z)[..., None], g[..., None])
        return {"w": (gz * d.x).sum(0)}

    def make(dims, gen, dtype, scale):
        n, k = dims["N"], dims["K"]
        x = scale * (1 + torch.randint(0, 2, (n, k, 4), generator=gen).to(torch.float64))
        return {"w": torch.ones(k, 4, dtype=torch.float64), "x": x}

    m = Model(name="maxpool_ties", dims={"N": Dim(1, 6, 4), "K": Dim(1, 4, 2)}, params={"w": ("K", 4)},
              data={"x": ("N", "K", 4)}, forward=forward, backward=backward, make_tensors=make)
    res = check_case(m, case_of(m, seed=1, N=4, K=3))
    assert res.verdict == PASS, (res.verdict, res.problems)    # the elements at ties set aside, the rest judged
    assert res.tensors["w"].mismatched > 0
    assert any("kink or tie set aside" in n for n in res.notes), res.notes
