"""Cost against size: each dimension of a few models scaled over about a decade, manual
and autograd forward+backward, CPU float32.  Factor 1 is the grid's own row."""
import pytest

from gradcheck_suite.bench.timing import FORWARD_BACKWARD, scaled_dims, sweep_points


@pytest.mark.parametrize("name,factor", sweep_points(), ids=[f"{n}-x{f:.3g}" for n, f in sweep_points()])
def test_sweep(bench_pair, registry, selected_names, name, factor, visit):
    if name not in registry or name not in selected_names:
        pytest.skip(f"model {name} is not benchmarked in this run")
    model = registry.get(name)
    bench_pair(model, scaled_dims(model, factor), FORWARD_BACKWARD, "cpu", "float32", table="sweep",
               visit=visit, factor=factor)
