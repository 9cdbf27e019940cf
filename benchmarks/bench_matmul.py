"""The machine's matmul throughput, measured in the same run: the yardstick for the
models' GFLOP/s ("% matmul" in the report)."""
import pytest

from gradcheck_suite import bench

# the yardstick gets at least 50 rounds, even in a --quick run
pytestmark = pytest.mark.benchmark(warmup=True, warmup_iterations=bench.WARMUP_ITERATIONS, min_rounds=50)


@pytest.mark.parametrize("n", bench.MATMUL_SIZES)
def test_matmul(benchmark, n, device, dtype):
    bench.measure(benchmark, bench.matmul_region(n, device, dtype), kind="matmul", group=f"matmul {device} {dtype}")
