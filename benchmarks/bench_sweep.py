"""Cost against size: each dimension of a few models scaled over about a decade,
manual and autograd forward+backward, CPU float32."""
import pytest

from gradcheck_suite import bench

pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=bench.WARMUP_ITERATIONS)


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("name,factor", bench.sweep_points(), ids=[f"{n}-x{f:.3g}" for n, f in bench.sweep_points()])
def test_sweep(benchmark, registry, name, factor, impl):
    if name not in registry:
        pytest.skip(f"model {name} is not registered")
    model = registry.get(name)
    reg = bench.region(model, bench.scaled_dims(model, factor), impl, bench.FORWARD_BACKWARD, "cpu", "float32")
    bench.measure(benchmark, reg, kind="sweep", group=f"sweep {name} x{factor:.3g}", factor=factor)
