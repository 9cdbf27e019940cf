"""Every registered model at its benchmark size: manual against autograd, the backward
alone and forward+backward, on CPU (float32, float64) and CUDA (float32)."""
import pytest

from gradcheck_suite import bench

pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=bench.WARMUP_ITERATIONS)


@pytest.mark.parametrize("phase", bench.PHASES)
@pytest.mark.parametrize("impl", bench.IMPLS)
def test_model(benchmark, model, impl, phase, device, dtype):
    reg = bench.region(model, model.bench_dims, impl, phase, device, dtype)
    bench.measure(benchmark, reg, kind="grid", group=f"{model.name} {device} {dtype} {phase}")
