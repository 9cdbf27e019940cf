"""Numpy layers as a record (the ``numpy`` kind, ``numpy.py``): :func:`numpy_model` and the
conversions between a case's tensors and the float64 arrays the user's code takes.

``numpy_model(layer_forward, layer_backward, ...)``
    Course-style layers: ``layer_forward(*arrays) -> (out, cache)`` and
    ``layer_backward(dout, cache) -> (d_first, d_second, ...)`` on float64 arrays; a
    forward with several outputs returns ``(out_1, ..., out_k, cache)`` and its backward
    takes ``(dout_1, ..., dout_k, cache)``.  The backward gets its own copy of ``dout``.  With
    a torch ``reference`` the verdict is three-way; without one, it is finite
    differences alone, and the report says so.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ..record.errors import ContractError
from ..record.spec import Dim, Model, SpecError
from . import common
from .numpy import KIND

__all__ = ["numpy_model"]


def numpy_model(forward: Callable[..., Any], backward: Callable[..., Any], *, name: str,
                dims: Mapping[str, Dim], inputs: Mapping[str, tuple], data: Mapping[str, tuple] | None = None,
                grads: common.Args | None = None, hyper: Mapping[str, Any] | None = None,
                args: common.Args | None = None, reference: Callable[..., Any] | None = None,
                **fields: Any) -> Model:
    """A record for numpy layers: ``forward(*arrays) -> (out, cache)`` and
    ``backward(dout, cache) -> gradients``, on float64 arrays.

    inputs     ``{name: shape}``: arrays that get gradients
    data       ``{name: shape}``: arrays that do not (targets, labels)
    grads      the order the backward returns its gradients in (default: ``inputs``'s)
    args       the forward's positional order by name (default: inputs, data, hyper)
    reference  optional torch function of the same arguments; without it the check is
               finite differences alone (a two-way verdict)
    """
    if not callable(forward) or not callable(backward):
        field = "forward" if not callable(forward) else "backward"
        raise SpecError(str(name), field, f"must be callable, got {forward if field == 'forward' else backward!r}")
    data, hyper = dict(data or {}), dict(hyper or {})
    order = common.order(str(name), args, {"inputs": inputs, "data": data, "hyper": hyper})
    names = tuple(grads) if grads is not None else tuple(inputs)
    if sorted(names) != sorted(inputs):
        raise SpecError(str(name), "grads", f"must name each input once ({', '.join(inputs)}), got {', '.join(names)}")
    if fields.get("double_backward"):
        raise SpecError(str(name), "double_backward", "numpy code has no graph to differentiate twice")
    if isinstance(fields.get("order"), int) and fields["order"] >= 2:
        raise SpecError(str(name), "order", "numpy code has no graph to differentiate twice")
    if fields.get("dtype", "float64") != "float64":
        raise SpecError(str(name), "dtype", "numpy models work in float64")

    def arrays(p, d, h):
        return [_to_numpy(p[n]) if n in p else _to_numpy(d[n]) if n in d else common.own(h[n]) for n in order]

    spread = [False]     # the forward returned (out_1, ..., out_k, cache): one dout argument each

    def fwd(p, d, h=None):
        returned = forward(*arrays(p, d, h))
        if not (isinstance(returned, tuple) and len(returned) >= 2):
            raise ContractError(f"{_name_of(forward)} must return (out, cache) or (out_1, ..., out_k, cache), "
                                f"got {type(returned).__name__}")
        like = next(iter(p.values()))
        spread[0] = len(returned) > 2
        outs = returned[:-1] if spread[0] else returned[0]
        return _to_torch(outs, like, _name_of(forward)), returned[-1]

    def bwd(p, d, cache, g, h=None):
        # the backward's own copy: course code writes into dout (dx = dout; dx[x <= 0] = 0)
        dout = tuple(_to_numpy(x, copy=True) for x in g) if isinstance(g, tuple) else _to_numpy(g, copy=True)
        got = backward(*dout, cache) if spread[0] else backward(dout, cache)
        if len(names) == 1 and not isinstance(got, (tuple, list)):
            got = (got,)
        if not isinstance(got, (tuple, list)) or len(got) != len(names):
            count = len(got) if isinstance(got, (tuple, list)) else type(got).__name__
            raise ContractError(f"{_name_of(backward)} returned {count}; the record expects "
                                f"{len(names)} gradients in the order {', '.join(names)}")
        return {n: _gradient(n, a, p[n], _name_of(backward)) for n, a in zip(names, got)}

    ref = None
    if reference is not None:
        if not callable(reference):
            raise SpecError(str(name), "reference", f"must be callable or None, got {reference!r}")

        def ref(p, d, h=None):
            return reference(*[p[n] if n in p else d[n] if n in d else common.own(h[n]) for n in order])

    return Model(name=name, dims=dims, params=dict(inputs), data=data, hyper=hyper, forward=fwd, backward=bwd,
                 reference=ref, kind=KIND.name, **common.record_fields(str(name), fields))


def _name_of(fn: Callable) -> str:
    return getattr(fn, "__name__", "the numpy code")


def _to_numpy(t: torch.Tensor, copy: bool = False) -> np.ndarray:
    t = t.detach().cpu()
    arr = t.to(torch.float64).numpy() if t.is_floating_point() else t.numpy()
    return np.array(arr, copy=True) if copy else arr


def _to_torch(out, like: torch.Tensor, who: str):
    if isinstance(out, (tuple, list)):
        return tuple(_to_torch(o, like, who) for o in out)
    arr = np.asarray(out)
    if arr.dtype == object:
        raise ContractError(f"{who} returned {type(out).__name__}, expected float64 arrays")
    t = torch.from_numpy(np.array(arr, copy=True))
    return t.to(device=like.device, dtype=like.dtype if t.is_floating_point() else t.dtype)


def _gradient(name: str, arr, x: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(arr, (np.ndarray, np.floating, float)):
        raise ContractError(f"{name}: {who} returned {type(arr).__name__}, expected a float64 array")
    arr = np.asarray(arr)
    if arr.dtype != np.float64:
        raise ContractError(f"{name}: {who} returned a {arr.dtype} array; numpy models work in float64")
    return torch.from_numpy(np.array(arr, copy=True)).to(device=x.device, dtype=x.dtype)
