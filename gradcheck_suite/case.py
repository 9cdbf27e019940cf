"""A concrete case: one model at fixed dims, dtype, device, seed and value scale."""
from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping

import torch

from .spec import Model, Tensors

_MARGIN = 0.1  # the default factory keeps values this many scales inside a domain bound


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    dims: Mapping[str, int]
    dtype: str
    device: str
    seed: int
    scale: float

    def describe(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return f"dims {dims or '-'} · {self.dtype} · {self.device} · seed {self.seed} · scale {self.scale!r}"

    def command(self, models_from: str | None = None) -> str:
        """One command that reproduces exactly this case."""
        parts = ["gradcheck-suite", "check", self.model]
        if models_from:
            parts += ["--models-from", models_from]
        if self.dims:
            parts += ["--dims", ",".join(f"{k}={v}" for k, v in self.dims.items())]
        parts += ["--dtype", self.dtype, "--device", self.device, "--seed", str(self.seed), "--scale", repr(self.scale)]
        return shlex.join(parts)

    def to_json(self) -> dict:
        return {"dims": dict(self.dims), "dtype": self.dtype, "device": self.device, "seed": self.seed, "scale": self.scale}


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


class FactoryError(Exception):
    """The model's tensors could not be built as its record says."""


def build(model: Model, case: Case) -> tuple[Tensors, Tensors]:
    """The parameters and data of a case, the same for every device and dtype of one seed."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = torch_dtype(case.dtype)
    if model.make_tensors is not None:
        made = model.make_tensors(dict(case.dims), gen, dtype, case.scale)
        tensors = _check_made(model, case, made)
    else:
        tensors = {name: _default(model, name, case, gen) for name in (*model.params, *model.data)}
    device = torch.device(case.device)
    cast = {}
    for name, t in tensors.items():
        t = t.to(device)
        cast[name] = t.to(dtype) if t.is_floating_point() else t
    return (Tensors((n, cast[n]) for n in model.params), Tensors((n, cast[n]) for n in model.data))


def upstream(out: torch.Tensor, seed: int) -> torch.Tensor:
    """A random upstream gradient, never close to 1, so a backward that ignores it fails."""
    gen = torch.Generator().manual_seed(seed ^ 0x5EED)
    if out.dim() == 0:
        sign = 1.0 if torch.rand((), generator=gen, dtype=torch.float64) < 0.5 else -1.0
        value = sign * (1.5 + 1.5 * torch.rand((), generator=gen, dtype=torch.float64))
    else:
        value = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    return value.to(dtype=out.dtype, device=out.device)


def _default(model: Model, name: str, case: Case, gen: torch.Generator) -> torch.Tensor:
    shape = model.shape(name, case.dims)
    low, high = model.domain.get(name, (None, None))
    s = case.scale
    if low is not None and high is not None:
        u = torch.rand(shape, generator=gen, dtype=torch.float64)
        return low + (high - low) * (_MARGIN + (1 - 2 * _MARGIN) * u)
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    if low is not None:
        return low + s * (_MARGIN + z.abs())
    if high is not None:
        return high - s * (_MARGIN + z.abs())
    return s * z


def _check_made(model: Model, case: Case, made: object) -> dict[str, torch.Tensor]:
    if not isinstance(made, Mapping):
        raise FactoryError(f"make_tensors returned {type(made).__name__}, expected a dict of tensors")
    want = [*model.params, *model.data]
    missing = [n for n in want if n not in made]
    extra = [n for n in made if n not in want]
    if missing or extra:
        raise FactoryError(f"make_tensors returned names {sorted(made)}; missing {missing}, unexpected {extra}")
    for name in want:
        t = made[name]
        if not isinstance(t, torch.Tensor):
            raise FactoryError(f"make_tensors gave {name} as {type(t).__name__}, expected a tensor")
        shape = model.shape(name, case.dims)
        if tuple(t.shape) != shape:
            raise FactoryError(f"make_tensors gave {name} shape {tuple(t.shape)}, the record says {shape}")
    return dict(made)
