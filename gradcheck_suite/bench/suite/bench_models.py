"""Every registered model at its benchmark size: manual against autograd, the backward
alone and forward+backward, on CPU (float32, float64) and CUDA (float32)."""
import pytest

from gradcheck_suite.bench.timing import PHASES


@pytest.mark.parametrize("phase", PHASES)
def test_model(bench_pair, model, phase, device, dtype, visit):
    bench_pair(model, model.bench_dims, phase, device, dtype, table="grid", visit=visit)
