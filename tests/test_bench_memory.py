"""What `gradcheck-suite bench` measures besides time: the bytes kept for the backward, the
peak of forward plus backward, and the FLOPs counted from a model's own ops.  Memory is
measured for real here (it is deterministic); nothing is timed."""
import os

import pytest
import torch

from gradcheck_suite import Dim, Model, op_model
from gradcheck_suite.bench import flops, memory, timing
from gradcheck_suite import load

N = 4096


class SinCosSavesOne(torch.autograd.Function):
    """sin(x)·cos(x) = sin(2x)/2: saves cos(2x), one tensor, where autograd of the plain
    product saves sin(x) and cos(x), two."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(torch.cos(2 * x))
        return torch.sin(x) * torch.cos(x)

    @staticmethod
    def backward(ctx, g):
        (c2,) = ctx.saved_tensors
        return g * c2


class SinCosOnCtx(SinCosSavesOne):
    """The same, but the tensor is kept as an attribute of ctx, not through save_for_backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.c2 = torch.cos(2 * x)
        return torch.sin(x) * torch.cos(x)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.c2


def sin_cos(fn, name):
    return op_model(fn, name=name, dims={"N": Dim(1, 8, bench=N)}, inputs={"x": ("N",)},
                    reference=lambda x: torch.sin(x) * torch.cos(x), dtype="float32")


@pytest.mark.parametrize("fn", [SinCosSavesOne, SinCosOnCtx])
def test_a_function_that_saves_half_of_what_autograd_saves_shows_half_kept(fn):
    found = memory.measure(sin_cos(fn, "sin_cos"), {"N": N})
    assert found["manual"].kept == N * 4 and found["autograd"].kept == 2 * N * 4
    assert found["manual"].kept / found["autograd"].kept == pytest.approx(0.5)


def mlp_forward(p, d):
    h = d.x @ p.w1
    return ((h.clamp(min=0) @ p.w2) ** 2).sum(), (h,)


def mlp_backward(p, d, cache, g, temporary=0):
    (h,) = cache
    a = h.clamp(min=0)
    gy = 2 * g * (a @ p.w2)
    if temporary:
        scratch = torch.ones(temporary)             # a large temporary the backward allocates and drops
        gy = gy + scratch[:1]
        del scratch
    gh = (gy @ p.w2.T) * (h > 0)
    return {"w1": d.x.T @ gh, "w2": a.T @ gy}


def mlp(temporary=0, extra_cache=False, name="mlp"):
    def forward(p, d):
        out, cache = mlp_forward(p, d)
        return out, cache + ((d.x * 2,) if extra_cache else ())
    return Model(name=name, dims={"N": Dim(1, 8, bench=32), "I": Dim(1, 8, bench=64), "H": Dim(1, 8, bench=16)},
                 params={"w1": ("I", "H"), "w2": ("H", "I")}, data={"x": ("N", "I")}, dtype="float32",
                 forward=forward, backward=lambda p, d, c, g: mlp_backward(p, d, c[:1], g, temporary))


def test_a_backward_that_allocates_a_large_temporary_shows_it_in_peak():
    dims = {"N": 32, "I": 64, "H": 16}
    plain = memory.measure(mlp(), dims)
    big = memory.measure(mlp(temporary=2_000_000), dims)          # 8 MB of float32
    # all of it, less what the backward had freed before it (a few KiB here)
    assert 0.99 * 8_000_000 <= big["manual"].peak - plain["manual"].peak <= 8_000_000
    assert big["autograd"] == plain["autograd"]                   # the same reference: autograd is unchanged
    assert plain["manual"].peak < 1_000_000 and big["manual"].kept == plain["manual"].kept


def test_peak_is_the_same_from_run_to_run_and_kept_leaves_out_the_inputs():
    dims = {"N": 32, "I": 64, "H": 16}
    runs = [memory.measure(mlp(), dims) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]
    assert runs[0]["manual"].kept == 32 * 16 * 4                  # h alone: x, w1 and w2 are inputs
    more = memory.measure(mlp(extra_cache=True), dims)
    assert more["manual"].kept == runs[0]["manual"].kept + 32 * 64 * 4


def test_held_bytes_counts_a_storage_once_and_views_as_their_whole_storage():
    x = torch.zeros(100)
    w = torch.zeros(10)
    cache = {"a": x[:10], "b": (x[20:30], x.view(10, 10)), "c": [torch.zeros(5)], "w": w}
    assert memory.held_bytes(cache) == 400 + 20 + 40
    assert memory.held_bytes(cache, exclude={"w": w}) == 400 + 20
    assert memory.held_bytes(cache, exclude=[x]) == 20 + 40


def test_peak_probe_sees_a_known_allocation():
    def allocate():
        t = torch.empty(1_000_000)          # 4 MB, filled and dropped
        t.fill_(1.0)
        return float(t[0])
    found = memory.peak(allocate, "cpu")
    assert 4_000_000 <= found < 4_100_000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_peak_sees_a_known_allocation():
    def allocate():
        t = torch.empty(1_000_000, device="cuda")
        t.fill_(1.0)
        return float(t[0])
    assert memory.peak(allocate, "cuda") >= 4_000_000


# --------------------------------------------------------------------------- FLOPs

BUILTIN = [m.name for m in load([])]


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_models_flops_matches_a_count_of_its_own_ops(name):
    model = load([]).get(name)
    dims = model.bench_dims
    fwd, bwd = flops.counted(model, dims)
    rec_fwd, rec_bwd = model.flops({**dims, **model.bench_hyper})
    # the records count by hand, elementwise steps a little differently: within a quarter,
    # where counting an x gradient the backward never computes doubles it
    assert rec_fwd == pytest.approx(fwd, rel=0.25), (rec_fwd, fwd)
    assert rec_bwd == pytest.approx(bwd, rel=0.25), (rec_bwd, bwd)


def test_the_op_counter_counts_matmuls_pointwise_ops_and_reductions():
    a, b = torch.ones(4, 8), torch.ones(8, 3)
    with flops.OpCounter() as c:
        ((a @ b).relu() * 2).sum()
    assert c.by_op == {"mm": 2 * 4 * 8 * 3, "relu": 12, "mul": 12, "sum": 12}
    with flops.OpCounter() as c:
        a.T.contiguous().view(-1).clone()
    assert c.total == 0


def test_a_record_without_flops_gets_them_counted_so_every_row_has_a_percent_of_matmul():
    root = os.path.join(os.path.dirname(__file__), "..", "examples")
    reg = load([os.path.join(root, "legendre_p3.py"), os.path.join(root, "custom_op_softplus.py")], builtin=False)
    for model in reg:
        assert model.flops is None
        dims = timing.scaled_dims(model, 0.05)
        for phase in timing.PHASES:
            assert timing.region(model, dims, "manual", phase).flops > 0
    p3 = reg.get("legendre_p3")
    fwd, bwd = flops.counted(p3, {"N": 100})
    assert fwd >= 5 * 100 and bwd >= 3 * 100          # 0.5·(5x³ − 3x) and its derivative, elementwise
