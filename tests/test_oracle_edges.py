"""The oracles on code as people write it: references that leave an output of a
multi-output op unused, gradients that torch.autograd.grad cannot take (a reentrant
checkpoint), and gradients that are exactly zero in the reference but rounding in the
manual code.  Each class has a correct model that must pass and a wrong twin that must
fail, naming the tensor."""
import itertools
import math
import warnings

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from gradcheck_suite import Case, Dim, Model, check_case, op_model
from gradcheck_suite import FAIL, PASS
from gradcheck_suite import run_model


def _case(model, dtype="float64", seed=0, scale=1.0, **dims):
    return Case(model.name, dims, dtype, "cpu", seed, scale)


# -- an output of a multi-output op that the reference never uses --------------------------
#
# Each selection keeps the first part of a multi-output op and drops the rest: autograd's
# hook on the dropped part gets no gradient at all (None), which the oracles must take as
# "nothing flowed here".

def _chunk(x):
    return 2 * x.chunk(2, -1)[0]


def _split(x):
    return 2 * x.split(1, -1)[0]


def _unbind(x):
    return 2 * x.unbind(-1)[0]


def _max(x):
    return 2 * x.max(-1).values


def _first_part_grad(x, g, name):
    """The gradient of <g, 2 * first part of x> with respect to x, by hand."""
    gx = torch.zeros_like(x)
    if name == "chunk":
        gx[..., :(x.shape[-1] + 1) // 2] = 2 * g
    elif name in ("split", "unbind"):
        gx[..., 0] = 2 * (g[..., 0] if g.dim() == x.dim() else g)
    else:   # max(dim): the gradient goes to the (first) largest element of each row
        idx = x.argmax(-1, keepdim=True)
        gx.scatter_(-1, idx, 2 * g.unsqueeze(-1))
    return gx


SELECTIONS = {"chunk": _chunk, "split": _split, "unbind": _unbind, "max": _max}


def _selection_model(name, wrong=False):
    select = SELECTIONS[name]

    def forward(p, d):
        return select(torch.tanh(p.x)), torch.tanh(p.x)

    def backward(p, d, t, g):
        gt = _first_part_grad(t, g, name)
        if wrong:
            gt = gt.clone()
            flat = gt.reshape(-1)
            flat[int(flat.ne(0).nonzero()[0])] *= 1 + 1e-5     # the first element that gets a gradient, 1e-5 off
        return {"x": gt * (1 - t * t)}

    def reference(p, d):
        return select(torch.tanh(p.x))

    return Model(name=f"keep_first_{name}", dims={"N": Dim(1, 3, 3), "D": Dim(2, 4, 4)}, params={"x": ("N", "D")},
                 forward=forward, backward=backward, reference=reference)


@pytest.mark.parametrize("name", SELECTIONS)
def test_a_reference_that_leaves_an_output_unused_is_judged(name):
    res = check_case(_selection_model(name), _case(_selection_model(name), N=3, D=4))
    assert res.verdict == PASS, (res.verdict, res.problems)


@pytest.mark.parametrize("name", SELECTIONS)
def test_a_wrong_backward_beside_an_unused_output_still_fails(name):
    model = _selection_model(name, wrong=True)
    res = check_case(model, _case(model, N=3, D=4, seed=1))
    assert res.verdict == FAIL and res.failing == ["x"], (res.verdict, res.problems)


@pytest.mark.parametrize("name", SELECTIONS)
def test_unused_outputs_pass_over_generated_cases(name):
    run = run_model(_selection_model(name), examples=6)
    assert run.verdict == "pass", run.failure and run.failure.problems


# -- a reentrant checkpoint: torch.autograd.grad is refused, .backward() works ------------

def _block(x, w):
    return torch.tanh(x @ w) @ w.T


def _block_backward(x, w, g, factor=1.0):
    h = torch.tanh(x @ w)
    gh = (g @ w) * (1 - h * h)
    return {"w": factor * (x.T @ gh) + g.T @ h}


def _checkpointed_reference(p, d):
    with warnings.catch_warnings():     # no input needs grad when the harness runs it plainly
        warnings.simplefilter("ignore")
        return checkpoint(_block, d.x, p.w, use_reentrant=True)


def _checkpointed_model(factor=1.0):
    def forward(p, d):
        return _block(d.x, p.w), None

    def backward(p, d, cache, g):
        return _block_backward(d.x, p.w, g, factor)

    return Model(name="checkpointed_block", dims={"N": Dim(1, 4, 3), "D": Dim(1, 5, 4)}, params={"w": ("D", "D")},
                 data={"x": ("N", "D")}, forward=forward, backward=backward, reference=_checkpointed_reference)


class _TanhBlock(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, factor):
        ctx.save_for_backward(x, w)
        ctx.factor = factor
        return _block(x, w)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return None, _block_backward(x, w, g, ctx.factor)["w"], None


def _checkpointed_op(factor=1.0):
    def op(x, w):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return checkpoint(_TanhBlock.apply, x, w, factor, use_reentrant=True)

    return op_model(op, name="checkpointed_op", dims={"N": Dim(1, 4, 3), "D": Dim(1, 5, 4)},
                    inputs={"w": ("D", "D")}, data={"x": ("N", "D")}, args=("x", "w"),
                    reference=lambda x, w: _block(x, w))


@pytest.mark.parametrize("make", [_checkpointed_model, _checkpointed_op], ids=["reference", "manual"])
def test_a_reentrant_checkpoint_is_differentiated_as_training_does(make):
    # in the reference (autograd's oracle) and in the op (the manual gradient): .backward()
    # into leaf copies where torch.autograd.grad is refused, never "backward raised"
    model = make()
    for dtype in ("float64", "float32"):
        res = check_case(model, _case(model, dtype, N=3, D=4))
        assert res.verdict == PASS, (dtype, res.verdict, res.problems)
    run = run_model(model, examples=6)
    assert run.verdict == "pass", run.failure and run.failure.problems


@pytest.mark.parametrize("make", [_checkpointed_model, _checkpointed_op], ids=["reference", "manual"])
def test_a_wrong_backward_under_a_reentrant_checkpoint_fails_naming_the_tensor(make):
    model = make(factor=1 + 1e-5)
    res = check_case(model, _case(model, N=3, D=4))
    assert res.verdict == FAIL and res.failing == ["w"], (res.verdict, res.problems)
    run = run_model(model, examples=6)
    assert run.verdict == "fail" and run.failure.failing == ["w"], (run.verdict, run.failure.problems)
    assert not any("raised" in p for p in run.failure.problems), run.failure.problems


def test_the_diagnosis_of_a_reentrant_checkpoint_speaks_of_the_model_not_of_torch_autograd_grad():
    run = run_model(_checkpointed_model(factor=1.01), examples=6)
    res = run.failure
    assert run.verdict == "fail" and res.failing == ["w"]
    said = " ".join([*res.problems, str(res.location_note or ""), *(k.text for k in res.diagnosis)])
    assert ".grad()" not in said and "could not trace" not in said, said


# -- a gradient that is exactly zero in the reference, rounding in the manual code -----------
#
# Attention over one position (or a saturated softmax): the exact gradients of q and k are
# 0, and torch's softmax backward gives exactly 0, while a backward written as flash
# attention writes it (D = rowsum(dO * O) beside dP = dO V^T) leaves rounding of about
# eps * |dO| |v| |k| there.  The kernel takes float32 only, so no float64 forward runs.

def _attention_backward(q, k, v, p, o, do, wrong=None):
    sc = 1 / math.sqrt(q.shape[-1])
    dv = p.transpose(-1, -2) @ do
    dp = do @ v.transpose(-1, -2)
    delta = (do * o).sum(-1, keepdim=True)
    ds = p * (dp - delta)
    dq = ds @ k * (1.0 if wrong == "scale" else sc)      # "scale": the 1/sqrt(E) forgotten in dq
    dk = ds.transpose(-1, -2) @ q * sc
    if wrong in ("one", "one64"):
        dq = dq.clone()
        dq[..., -1, 0] *= 1 + (1e-5 if wrong == "one64" else 1e-3)
    if wrong == "one_v":
        dv = dv.clone()
        dv[..., 0, 0] *= 1 + 1e-5
    return dq, dk, dv


def _attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v


class _Float32Attention(torch.autograd.Function):
    wrong = None

    @staticmethod
    def forward(ctx, q, k, v):
        assert q.dtype == torch.float32, "this kernel takes float32 only"
        s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        p = torch.softmax(s, -1)
        o = p @ v
        ctx.save_for_backward(q, k, v, p, o)
        return o

    @classmethod
    def backward(cls, ctx, do):
        return _attention_backward(*ctx.saved_tensors, do, cls.wrong)


def _attention_op(wrong=None):
    fn = type(f"Attention_{wrong}", (_Float32Attention,), {"wrong": wrong})
    return op_model(fn, name=f"float32_attention_{wrong or 'correct'}", dtype="float32",
                    dims={"B": Dim(1, 2, 2), "T": Dim(1, 6, 4), "E": Dim(1, 64, 8)},
                    inputs={"q": ("B", "T", "E"), "k": ("B", "T", "E"), "v": ("B", "T", "E")}, reference=_attention)


def _attention_model(wrong=None):
    """The same backward as a plain record, in any dtype."""
    def forward(p, d):
        s = p.q @ p.k.transpose(-1, -2) / math.sqrt(p.q.shape[-1])
        prob = torch.softmax(s, -1)
        o = prob @ p.v
        return o, (prob, o)

    def backward(p, d, cache, g):
        dq, dk, dv = _attention_backward(p.q, p.k, p.v, *cache, g, wrong)
        return {"q": dq, "k": dk, "v": dv}

    return Model(name=f"attention_{wrong or 'correct'}", dims={"B": Dim(1, 2, 2), "T": Dim(1, 6, 4), "E": Dim(1, 64, 8)},
                 params={"q": ("B", "T", "E"), "k": ("B", "T", "E"), "v": ("B", "T", "E")},
                 forward=forward, backward=backward, reference=lambda p, d: _attention(p.q, p.k, p.v))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0, 1e3])
@pytest.mark.parametrize("E", [1, 16, 64])
def test_a_correct_float32_attention_over_one_position_passes(E, scale):
    model = _attention_op()
    for seed in range(4):
        res = check_case(model, _case(model, "float32", seed, scale, B=2, T=1, E=E))
        assert res.verdict == PASS, (seed, res.verdict, res.problems,
                                     [(n, c.max_ratio, c.worst[:1]) for n, c in res.tensors.items()])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_correct_attention_that_saturates_passes(dtype):
    # one probability ~1 per row at scale 30: the exact gradients of q and k are ~0 again
    model = _attention_model()
    for T, seed in itertools.product((1, 3), range(3)):
        res = check_case(model, _case(model, dtype, seed, 30.0 if dtype == "float32" else 4.0, B=2, T=T, E=16))
        assert res.ok, (T, seed, res.verdict, res.problems, [(n, c.max_ratio) for n, c in res.tensors.items()])


def test_a_correct_float32_attention_passes_over_generated_cases():
    run = run_model(_attention_op(), examples=12)
    assert run.verdict == "pass", run.failure and (run.failure.case, run.failure.problems)


@pytest.mark.parametrize("wrong, tensor", [("one", "q"), ("scale", "q")])
def test_a_wrong_float32_attention_still_fails_naming_the_tensor(wrong, tensor):
    run = run_model(_attention_op(wrong), examples=12)
    assert run.verdict == "fail" and run.failure.failing == [tensor], (
        run.verdict, run.failure and (run.failure.case, run.failure.problems))


@pytest.mark.parametrize("wrong, tensor, T", [("one64", "q", 4), ("one_v", "v", 1), ("one_v", "v", 4)])
def test_an_error_of_1e5_in_one_element_of_a_float64_attention_still_fails(wrong, tensor, T):
    # (at scale 1e3 the softmax saturates and dq is ~1e-100 exactly: a 1e-5 error of it is rounding)
    model = _attention_model(wrong)
    for scale in (1e-3, 1.0) if tensor == "q" else (1e-3, 1.0, 1e3):
        res = check_case(model, _case(model, "float64", 0, scale, B=2, T=T, E=8))
        assert res.verdict == FAIL and res.failing == [tensor], (scale, res.verdict, res.problems)


_FLOAT32_ONLY = '''
import math, torch
from gradcheck_suite import Dim, op_model

class Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        assert q.dtype == torch.float32, "this kernel takes float32 only"
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        o = p @ v
        ctx.save_for_backward(q, k, v, p, o)
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, p, o = ctx.saved_tensors
        sc = 1 / math.sqrt(q.shape[-1])
        ds = p * (do @ v.transpose(-1, -2) - (do * o).sum(-1, keepdim=True))
        return ds @ k * sc, ds.transpose(-1, -2) @ q * sc, p.transpose(-1, -2) @ do

def reference(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1) @ v

attention32 = op_model(Attention, name="attention32", dtype="float32",
                       dims={"B": Dim(1, 2, 2), "T": Dim(1, 6, 4), "E": Dim(1, 32, 8)},
                       inputs={"q": ("B", "T", "E"), "k": ("B", "T", "E"), "v": ("B", "T", "E")}, reference=reference)
'''


def test_a_check_where_no_second_oracle_ran_says_so(tmp_path):
    import json
    import subprocess
    import sys
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "attention32.py").write_text(_FLOAT32_ONLY)
    done = subprocess.run([sys.executable, "-m", "gradcheck_suite", "check", "attention32", "--models-from",
                           str(tmp_path / "models"), "--examples", "8", "--json", str(tmp_path / "r.json")],
                          text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("attention32"))
    assert "not run" in row and "pass" in row, done.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["models"][0]["oracles"] == ["autograd"], report["models"][0]
