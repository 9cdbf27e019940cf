"""The seed pages' printed numbers, reproduced with the registered models' own
forward and hand-written backward (per-sample SGD, lr 0.01, w0 = 1)."""
import torch

from gradcheck_suite import Tensors


def _sgd_trace(model, xs, ys, epochs, dtype):
    """Per-sample SGD on scalar_linear; yields (x, y, gradient, loss before, w after) per step."""
    w = torch.tensor(1.0, dtype=dtype)
    for _ in range(epochs):
        for x, y in zip(xs, ys):
            p = Tensors(w=w)
            d = Tensors(x=torch.tensor([x], dtype=dtype), y=torch.tensor([y], dtype=dtype))
            out, cache = model.forward(p, d)
            grad = model.backward(p, d, cache, torch.ones_like(out))["w"]
            w = w - 0.01 * grad
            yield x, y, float(grad), float(out[0]), w


def test_seed_000_golden_trace_in_float64(registry):
    m = registry.get("scalar_linear")
    rows = []  # the page prints the first 9 epochs: rows 0 to 35
    for x, y, _, _, w in _sgd_trace(m, [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0], 30, torch.float64):
        after, _ = m.forward(Tensors(w=w), Tensors(x=torch.tensor([x], dtype=torch.float64),
                                                   y=torch.tensor([y], dtype=torch.float64)))
        rows.append((x, y, float(w * x), float(after[0]), float(w)))
    assert rows[0] == (1.0, 2.0, 1.02, 0.9603999999999999, 1.02)
    assert rows[1] == (2.0, 4.0, 2.1968, 3.2515302399999997, 1.0984)
    assert rows[2] == (3.0, 6.0, 3.782064, 4.919240100095999, 1.260688)
    assert rows[35] == (4.0, 8.0, 7.991794784259583, 6.732556534678497e-05, 1.9979486960648958)


def test_seed_001_float32_gradients_progress_and_prediction(registry):
    m = registry.get("scalar_linear")
    steps = list(_sgd_trace(m, [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 100, torch.float32))
    assert [s[2] for s in steps[:3]] == [-2.0, -7.840000152587891, -16.228801727294922]
    assert steps[2][3] == 7.315943717956543           # progress: 0, the last sample's loss
    assert [s[2] for s in steps[3:6]] == [-1.478623867034912, -5.796205520629883, -11.998146057128906]
    assert steps[-1][3] == 9.094947017729282e-13       # progress: 99
    assert float(4 * steps[-1][4]) == 7.999998569488525
