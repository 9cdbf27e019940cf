"""What a case costs: the work the checker does and the work it leaves out (not timings:
those are in benchmarks/check_speed.py and benchmarks/busy_targets.py)."""
import subprocess
import sys
import textwrap

import pytest
import torch

from gradcheck_suite import Case, Dim, Model, check_case
from gradcheck_suite.run import runner
from gradcheck_suite.verdict import rules
from gradcheck_suite.verdict.tolerance import all_finite
from gradcheck_suite.run.limits import keep_freed_memory


def _tanh_forward(p, d):
    y = torch.tanh(d.x @ p.w)
    return (y * d.t).sum(), y


def _tanh_backward(p, d, cache, g):
    gh = g * d.t * (1 - cache ** 2)
    return {"w": d.x.T @ gh}


def _tanh_layer(forward=_tanh_forward, backward=_tanh_backward, high=24) -> Model:
    """y = tanh(x @ w), loss = <y, t>: smooth, so nothing is set aside."""
    return Model(name="tanh_layer", dims={"N": Dim(1, high, 16), "I": Dim(1, high, 16), "O": Dim(1, high, 16)},
                 params={"w": ("I", "O")}, data={"x": ("N", "I"), "t": ("N", "O")},
                 forward=forward, backward=backward)


def test_a_case_where_both_gradients_agree_costs_two_forward_calls_of_finite_differences():
    calls = []

    def forward(p, d):
        calls.append(1)
        return _tanh_forward(p, d)

    model = _tanh_layer(forward=forward)
    for seed in range(5):
        calls.clear()
        res = check_case(model, Case(model.name, {"N": 20, "I": 30, "O": 20}, "float64", "cpu", seed, 1.0))
        assert res.verdict == "pass", res.problems
        # the case's own forward, whose graph autograd differentiates, phi(+h), phi(-h)
        # along one random direction, and the forward on the inputs in other layouts
        assert len(calls) == 4


class _Cache:
    """A cache that is not tensors in tuples, lists and dicts."""

    def __init__(self, y):
        self.y = y


@pytest.mark.parametrize("wrap, forwards", [(lambda y: y, 4), (lambda y: {"y": [y]}, 4), (_Cache, 5)])
def test_the_backward_gets_a_plain_cache_from_the_forward_run_once_for_both_gradients(wrap, forwards):
    # the backward reads its cache through numpy, which a tensor that requires grad refuses:
    # a cache of tensors in containers is detached, anything else comes from a plain call
    calls = []

    def forward(p, d):
        calls.append(1)
        out, y = _tanh_forward(p, d)
        return out, wrap(y)

    def backward(p, d, cache, g):
        y = cache if isinstance(cache, torch.Tensor) else cache["y"][0] if isinstance(cache, dict) else cache.y
        return _tanh_backward(p, d, torch.from_numpy(y.numpy()), g)

    model = _tanh_layer(forward=forward, backward=backward)
    res = check_case(model, Case(model.name, {"N": 5, "I": 30, "O": 20}, "float64", "cpu", 0, 1.0))
    assert res.verdict == "pass", res.problems
    assert len(calls) == forwards


def test_a_wrong_backward_still_runs_the_full_estimate_on_its_worst_elements():
    def backward(p, d, cache, g):     # the derivative of tanh left out of one element
        grads = _tanh_backward(p, d, cache, g)
        grads["w"][0, 0] = (d.x[:, 0] * (g * d.t[:, 0])).sum()
        return grads

    model = _tanh_layer(backward=backward)
    res = check_case(model, Case(model.name, {"N": 20, "I": 30, "O": 20}, "float64", "cpu", 3, 1.0))
    assert res.verdict == "fail" and res.failing == ["w"]
    assert res.tensors["w"].worst[0].index == (0, 0)
    assert res.tensors["w"].worst[0].finite_diff is not None


def test_shrinking_stops_at_its_time_budget(monkeypatch):
    def backward(p, d, cache, g):     # the derivative of tanh left out from a batch of 20 on
        grads = _tanh_backward(p, d, cache, g)
        return {"w": d.x.T @ (g * d.t)} if d.x.shape[0] >= 20 else grads

    model = _tanh_layer(backward=backward)
    full = runner.run_model(model, examples=40)
    assert full.verdict == "fail"
    assert full.failure.case.dims["N"] == 20           # as small as it fails
    assert full.shrink_steps > 1

    monkeypatch.setattr(rules, "SHRINK_SECONDS", 0.0)
    monkeypatch.setattr(rules, "SHRINK_CASES", 0)       # no time at all, whatever a case costs
    cut = runner.run_model(model, examples=40)
    assert cut.verdict == "fail"
    assert cut.shrink_steps <= 1                        # one step, then the budget is spent
    assert cut.failure.case.dims["N"] >= 20


def test_every_element_finite_is_decided_without_overflow_from_the_sum():
    assert all_finite(torch.tensor([1e308, 1e308], dtype=torch.float64))     # the sum overflows, no element
    assert all_finite(torch.full((4,), 6e4, dtype=torch.float16))
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("inf"), -float("inf")]))
    assert not all_finite(torch.tensor([1.0, float("-inf")], dtype=torch.float16))
    assert all_finite(torch.zeros(0))


def test_checking_does_not_load_torchs_symbolic_shapes():
    """torch.autograd.grad with grad_outputs imports sympy (a third of a second); the
    checker takes the gradient of <g, out> instead."""
    code = textwrap.dedent("""
        import sys
        from gradcheck_suite import Case, check_case, load
        m = load().get("mlp_relu")
        res = check_case(m, Case(m.name, {"N": 3, "D_in": 4, "H": 5, "D_out": 2}, "float64", "cpu", 1, 1.0))
        assert res.verdict == "pass", res.problems
        print("torch.fx.experimental.symbolic_shapes" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_cli_allocator_setting_takes_on_glibc():
    import platform
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert keep_freed_memory() is True


def test_an_estimate_that_rounding_swamps_is_left_out_of_the_reported_error(registry):
    """deep_linear at scale 1e3: its loss is ~1e60, so a bias's slope of ~1e45 is beyond
    what finite differences resolve (their error ~1e47).  Such an estimate agrees, and says
    nothing of relative error: the reported worst is taken from the resolved ones."""
    m = registry.get("deep_linear")
    res = check_case(m, Case(m.name, {"N": 31, "F": 7, "H1": 7, "H2": 7}, "float64", "cpu", 2, 1000.0))
    assert res.verdict == "pass"
    assert res.fd_rel_err < 1e-3
