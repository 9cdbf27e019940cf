"""A concrete case: one model at fixed dims, dtype, device, seed and value scale."""
from __future__ import annotations

import ast
import dataclasses
import math
import shlex
from collections.abc import Mapping

import numpy as np
import torch

from ..kinds.sharded import WORLD_SIZE
from ..record.errors import ContractError, FactoryError, Unsupported
from ..record.keyvalue import pairs
from ..record.spec import Hyper, Model, Tensors
from ..verdict import rules
from ..verdict.tolerance import real_dtype


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    dims: Mapping[str, int]
    dtype: str
    device: str
    seed: int
    scale: float
    hyper: Mapping[str, object] = dataclasses.field(default_factory=dict)
    compile: str | None = None     # the torch.compile backend the case also runs under (stages.compiled)
    order: int | None = None       # the highest derivative checked, over the record's (--order; stages.double_backward)
    fullgraph: bool = False        # under compile, a graph break is an error (--compile-fullgraph; stages.compiled)

    @property
    def real_dtype(self) -> str:
        """The dtype whose rules the case takes: float32 for complex64, float64 for complex128
        (a complex case is judged in the real view, see :class:`Bound`), else its own."""
        return real_dtype(self.dtype)

    @property
    def values(self) -> dict[str, object]:
        """Dims and hyperparameters together: what shapes and constraints read."""
        return {**self.dims, **self.hyper}

    def describe(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        own = self._own_hyper
        hyper = f" · hyper {format_hyper(own, ', ')}" if own else ""
        ranks = f" · world size {self.hyper[WORLD_SIZE]}" if WORLD_SIZE in self.hyper else ""
        return f"dims {dims or '-'}{hyper}{ranks} · {self.dtype} · {self.device} · seed {self.seed} · scale {self.scale!r}"

    def command(self, models_from: str | None = None) -> str:
        """One command that reproduces exactly this case."""
        parts = ["gradcheck-suite", "check", self.model]
        if models_from:
            parts += ["--models-from", models_from]
        if self.dims:
            parts += ["--dims", ",".join(f"{k}={v}" for k, v in self.dims.items())]
        if self._own_hyper:
            parts += ["--hyper", format_hyper(self._own_hyper)]
        if WORLD_SIZE in self.hyper:
            parts += ["--world-size", str(self.hyper[WORLD_SIZE])]
        parts += ["--dtype", self.dtype, "--device", self.device, "--seed", str(self.seed), "--scale", repr(self.scale)]
        if self.compile:
            parts += ["--compile", self.compile]
        if self.compile and self.fullgraph:
            parts += ["--compile-fullgraph"]
        if self.order is not None:
            parts += ["--order", str(self.order)]
        return shlex.join(parts)

    @property
    def _own_hyper(self) -> dict[str, object]:
        """The hyperparameters but a sharded case's world size (``--world-size``, its own option)."""
        return {k: v for k, v in self.hyper.items() if k != WORLD_SIZE}

    def to_json(self) -> dict:
        return {"dims": dict(self.dims), "hyper": dict(self.hyper), "dtype": self.dtype, "device": self.device,
                "seed": self.seed, "scale": self.scale} | ({"compile": self.compile} if self.compile else {}) \
            | ({"fullgraph": True} if self.compile and self.fullgraph else {}) \
            | ({"order": self.order} if self.order is not None else {})


def format_hyper(hyper: Mapping[str, object], sep: str = ",") -> str:
    """``stride=2,flag=True,mode='same'``: what ``--hyper`` reads back (see ``parse_hyper``)."""
    return sep.join(f"{k}={_word(v)}" for k, v in hyper.items())


def _word(value: object) -> str:
    """A string that reads back as itself stays a bare word (mode=same); all else is its repr."""
    if isinstance(value, str) and value.isidentifier() and value not in ("True", "False", "None"):
        return value
    return repr(value)


def parse_hyper(text: str | None) -> dict[str, object]:
    """``--hyper K=V,...``: each value a Python literal (2, 0.5, True, None, 'same'), or a bare word."""
    out = {}
    for key, value in pairs("--hyper", text, "stride=2,bias=True"):
        try:
            out[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key] = value.strip()
    return out


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def float64(tensors: Tensors) -> Tensors:
    """The floating-point tensors in float64, detached; the others as they are."""
    return Tensors((n, x.detach().to(torch.float64) if x.is_floating_point() else x) for n, x in tensors.items())


def describe(x: object) -> str:
    """What a value is, for a message: ``a float32 tensor of shape (2, 3)``, ``tuple``, ``None``."""
    if isinstance(x, torch.Tensor):
        return f"a {str(x.dtype).removeprefix('torch.')} tensor of shape {tuple(x.shape)}"
    if isinstance(x, np.generic):
        return f"numpy.{type(x).__name__} (a numpy scalar)"
    if isinstance(x, np.ndarray):
        return f"a numpy {x.dtype} array of shape {x.shape}"
    return "None" if x is None else type(x).__name__


#: what a layout other than dense is called in a message
_LAYOUTS = {"sparse_coo": "sparse COO", "sparse_csr": "sparse CSR", "sparse_csc": "sparse CSC",
            "sparse_bsr": "sparse BSR", "sparse_bsc": "sparse BSC", "_mkldnn": "MKL-DNN"}


def layout_problem(x: object, what: str, fix: str) -> str | None:
    """Why ``x`` cannot be judged where it is a tensor of a layout other than dense
    (strided): the comparisons, the finite differences and the contract's checks read every
    element.  Gradients on a sparse tensor's specified elements only (the ``masked``
    semantics of ``torch.autograd.gradcheck``) are not checked: one line that says so, and
    what to do, never an internal error.  None for anything else."""
    if not isinstance(x, torch.Tensor) or x.layout == torch.strided:
        return None
    layout = str(x.layout).removeprefix("torch.")
    return (f"{what} is a {_LAYOUTS.get(layout, layout)} tensor, which the harness does not check here (the case "
            f"is set aside): it checks dense (strided) tensors, and sparse COO inputs of op_model records; {fix}")


#: the end of a refusal of a sparse input: what is supported instead
SPARSE_INPUT_FIX = ("an op_model record checks a sparse COO input on its specified elements "
                    "(torch.autograd.gradcheck(..., masked=True))")


def as_tensor_hint(x: object, what: str) -> str:
    """What to do where a tensor was expected and ``x`` came back: one clause, or ''."""
    if isinstance(x, (np.generic, np.ndarray)):
        return (f": return {what} as a torch tensor (numpy values have no autograd graph: compute in torch, "
                "or hold numpy code with numpy_model)")
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return f": return {what} as a torch tensor, not a Python number (.item() and float() drop the graph)"
    if isinstance(x, (list, tuple)) and x and all(isinstance(t, torch.Tensor) for t in x):
        return f": return {what} as one tensor (torch.stack or torch.cat)"
    return ""


def build(model: Model, case: Case, dense: bool = True) -> tuple[Tensors, Tensors]:
    """The parameters and data of a case, the same for every device and dtype of one seed.
    With ``dense`` (a check, training), a tensor of another layout (sparse) is refused in one
    line; the benchmarks time it as it is."""
    gen = torch.Generator().manual_seed(case.seed)
    dtype = torch_dtype(case.dtype)
    if model.make_tensors is not None:
        made = model.make_tensors(dict(case.values), gen, dtype, case.scale)
        tensors = _check_made(model, case, made)
    else:
        draws = np.random.Generator(np.random.SFC64(case.seed % 2**64))
        tensors = {name: _one(model, name, case, gen, dtype, draws) for name in (*model.params, *model.data)}
    sparse = {}
    op = getattr(model, "op", None)
    for name, t in tensors.items() if dense else ():
        if op is not None and name in op.args and isinstance(t, torch.Tensor) and t.layout == torch.sparse_coo:
            t = t.detach().coalesce()     # an op's sparse COO input: held dense, rebuilt at its pattern (masked)
            sparse[name], tensors[name] = t.indices(), t.to_dense()
            continue
        source = "make_tensors" if model.make_tensors is not None else f"factories[{name!r}]"
        text = layout_problem(t, f"{name} (from {source})",
                              f"densify it there (.to_dense()), or hold the op with op_model: {SPARSE_INPUT_FIX}")
        if text:
            raise Unsupported(text)
    if sparse and isinstance(model, Bound):
        model.hold_sparse(sparse)
    device = torch.device(case.device)
    real = torch_dtype(case.real_dtype)
    cast = {}
    for name, t in tensors.items():
        t = t.to(device)
        if dtype.is_complex:     # a real tensor from a factory keeps the real counterpart
            cast[name] = t.to(dtype) if t.is_complex() else t.to(real) if t.is_floating_point() else t
        else:
            cast[name] = t.to(dtype) if t.is_floating_point() else t
    return (Tensors((n, cast[n]) for n in model.params), Tensors((n, cast[n]) for n in model.data))


def upstream(out: torch.Tensor, seed: int) -> torch.Tensor:
    """A random upstream gradient, never close to 1, so a backward that ignores it fails."""
    gen = torch.Generator().manual_seed(seed ^ rules.SALT_UPSTREAM)
    if out.dim() == 0:
        sign = 1.0 if torch.rand((), generator=gen, dtype=torch.float64) < 0.5 else -1.0
        value = sign * (rules.UPSTREAM_LOW + rules.UPSTREAM_WIDTH * torch.rand((), generator=gen, dtype=torch.float64))
    else:
        value = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    return value.to(dtype=out.dtype, device=out.device)


def _one(model: Model, name: str, case: Case, gen: torch.Generator, dtype: torch.dtype,
         draws: np.random.Generator) -> torch.Tensor:
    """One tensor: from its own factory where the record gives one, else the default values."""
    factory = model.factories.get(name)
    if factory is None:
        return _default(model, name, case, draws)
    made = factory(dict(case.values), gen, dtype, _scale_of(model, name, case))
    shape = model.shape(name, case.values)
    if not isinstance(made, torch.Tensor):
        raise FactoryError(f"factories[{name!r}] gave {type(made).__name__}, expected a tensor")
    if tuple(made.shape) != shape:
        raise FactoryError(f"factories[{name!r}] gave shape {tuple(made.shape)}, the record says {shape}")
    return made


def _scale_of(model: Model, name: str, case: Case) -> float:
    """The case's scale, clamped into the tensor's own range where the record gives one."""
    low, high = model.scales.get(name, (0.0, float("inf")))
    return min(max(case.scale, low), high)


def _default(model: Model, name: str, case: Case, draws: np.random.Generator) -> torch.Tensor:
    """Float64 normals (uniform inside a two-sided domain) from numpy's generator, which
    draws them several times faster than torch's on a CPU; every dtype and device of one
    seed starts from the same values."""
    shape = model.shape(name, case.values)
    low, high = model.domain.get(name, (None, None))
    s = _scale_of(model, name, case)
    if low is not None and high is not None:
        u = torch.from_numpy(draws.random(shape))
        return low + (high - low) * (rules.FACTORY_MARGIN + (1 - 2 * rules.FACTORY_MARGIN) * u)
    if case.dtype != case.real_dtype:       # complex: real and imaginary parts, each at the scale
        if low is not None or high is not None:
            raise FactoryError(f"domain[{name!r}] bounds real values, and {case.dtype} draws complex ones: give "
                               f"{name} a factory that draws inside its domain")
        return torch.view_as_complex(torch.from_numpy(draws.standard_normal((*shape, 2)))).mul_(s)
    z = torch.from_numpy(draws.standard_normal(shape))
    if low is not None:
        return low + s * (rules.FACTORY_MARGIN + z.abs())
    if high is not None:
        return high - s * (rules.FACTORY_MARGIN + z.abs())
    return z.mul_(s)       # in place: the draw is ours, and a copy the size of the tensor costs a pass


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
        shape = model.shape(name, case.values)
        if tuple(t.shape) != shape:
            raise FactoryError(f"make_tensors gave {name} shape {tuple(t.shape)}, the record says {shape}")
    return dict(made)


class Bound:
    """A model at one case, in the shape the checker and the oracles call:
    ``forward(p, d) -> (output, cache)``, ``backward(p, d, cache, g)`` and
    ``reference(p, d)``, with the case's hyperparameters passed on and a tuple of
    outputs joined into one flat output (its upstream gradient split back into a
    tuple for the backward).  Every other attribute is the model's own.

    A complex case (complex64, complex128) is checked in the real view: :meth:`build` gives
    each complex tensor as ``torch.view_as_real`` (its real and imaginary parts on a last
    axis of 2), the model's code gets the complex tensors back (views of the same memory),
    and a complex output, upstream gradient and gradient cross as real views too.  Torch's
    gradient of a real loss at a complex tensor, the conjugate Wirtinger derivative
    ``dL/dx + i dL/dy`` (what ``torch.autograd.grad`` returns), is then the real view's own
    gradient, and ``grad_outputs=g`` differentiates ``Re(sum(conj(g) * y))``, the real
    view's ``<g, y>``: the oracles, finite differences and tolerances work on real tensors
    unchanged.
    """

    def __init__(self, model: Model, case: Case):
        self.model = model
        self.h = Hyper(case.hyper) if model.hyper else None
        self.extra = (self.h,) if model.hyper else ()   # the hyperparameters, passed after the tensors
        self.layout: list[tuple[int, ...]] | None = None   # the forward's output shapes, when a tuple
        self.views: frozenset[str] | None = None   # the complex tensors, once built in the real view
        self.complex_out: list[bool] = []           # which outputs (joined) were complex

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def hold_sparse(self, sparse: Mapping[str, torch.Tensor]) -> None:
        """The case holds these op inputs dense: the op and the reference get each rebuilt
        sparse at its indices (``kinds.op.Masked``), passed on with the hyperparameters."""
        from ..kinds.op import Masked
        self.h = Masked(self.h if self.h is not None else {}, sparse)
        self.extra = (self.h,)

    def build(self, case: Case, dense: bool = True) -> tuple[Tensors, Tensors]:
        """The case's tensors (:func:`build`); a complex case's complex tensors as real views."""
        p, d = build(self, case, dense)    # the Bound: a sparse input is held on it
        if not torch_dtype(case.dtype).is_complex:
            return p, d
        self.views = frozenset(n for n, t in (*p.items(), *d.items()) if t.is_complex())
        return real_views(p, self.views), real_views(d, self.views)

    def user(self, tensors: Tensors) -> Tensors:
        """The tensors as the model's code takes them: a real view back to complex."""
        if not self.views:
            return tensors
        return Tensors((n, as_complex(t) if n in self.views else t) for n, t in tensors.items())

    def upstream(self, g: torch.Tensor):
        """The upstream gradient as the backward takes it: split per output, complex where
        the output was."""
        gs = split(g, self.layout)
        if self.views is None:
            return gs
        if isinstance(gs, tuple):
            return tuple(as_complex(x) if x is not None and c else x for x, c in zip(gs, self.complex_out))
        return as_complex(gs) if self.complex_out and self.complex_out[0] else gs

    def conjugated(self, g: torch.Tensor) -> torch.Tensor | None:
        """The upstream gradient (real view, joined) with each complex output's conjugated
        (its imaginary parts negated); None where no output is complex."""
        if not self.views or not any(self.complex_out):
            return None
        gs = split(g, self.layout)
        parts = gs if isinstance(gs, tuple) else (gs,)
        flipped = [conjugate(x) if c else x for x, c in zip(parts, self.complex_out) if x is not None]
        return torch.cat([x.reshape(-1) for x in flipped]) if isinstance(gs, tuple) else flipped[0]

    def _real_out(self, out):
        """A complex output (or member) as its real view; which were complex kept for ``g``."""
        if self.views is None:
            return out
        if isinstance(out, (tuple, list)):
            flags = [isinstance(t, torch.Tensor) and t.is_complex() for t in out]
            out = type(out)(real_view(t) if c else t for t, c in zip(out, flags))
            self.complex_out = flags      # one per member, as split gives them back
            return out
        self.complex_out = [isinstance(out, torch.Tensor) and out.is_complex()]
        return real_view(out) if self.complex_out[0] else out

    def forward(self, p: Tensors, d: Tensors):
        returned = self.model.forward(self.user(p), self.user(d), *self.extra)
        if not (isinstance(returned, tuple) and len(returned) == 2):
            return returned   # the checker reports the broken contract
        out, cache = returned
        flat, self.layout = join(self._real_out(out), "forward")
        return flat, cache

    def backward(self, p: Tensors, d: Tensors, cache, g: torch.Tensor):
        return self.real_grads(self.model.backward(self.user(p), self.user(d), cache, self.upstream(g), *self.extra),
                               p, d)

    def real_grads(self, grads, p: Tensors, d: Tensors):
        """Gradients of the model's code (a dict): a complex tensor's as its real view."""
        if not self.views or not isinstance(grads, Mapping):
            return grads
        return {n: self._real_grad(n, v, p[n] if n in p else d.get(n)) if n in self.views else v
                for n, v in grads.items()}

    @staticmethod
    def _real_grad(name: str, grad, tensor: torch.Tensor | None):
        """A complex tensor's gradient as its real view; one that is not complex, or of
        another dtype, is named in the tensor's own (complex) terms."""
        if not isinstance(grad, torch.Tensor) or tensor is None:
            return grad      # the contract names what came back
        want = as_complex(tensor).dtype
        if not grad.is_complex():
            raise ContractError(f"backward returned {describe(grad)} for {name}, a {str(want).removeprefix('torch.')} "
                                "tensor: its gradient is complex too (torch's conjugate Wirtinger derivative, "
                                "dL/dx + i dL/dy), of the tensor's dtype")
        if grad.dtype != want:
            raise ContractError(f"{name}: gradient dtype {str(grad.dtype).removeprefix('torch.')}, expected "
                                f"{str(want).removeprefix('torch.')}")
        return real_view(grad)

    @property
    def reference(self):
        if self.model.reference is None:
            return None
        return lambda p, d: join(self._real_out(self.model.reference(self.user(p), self.user(d), *self.extra)),
                                 "reference")[0]


def real_view(t: torch.Tensor) -> torch.Tensor:
    """A complex tensor as real and imaginary parts on a last axis of 2 (a view where it can be)."""
    return torch.view_as_real(t.resolve_conj())


def real_views(tensors: Tensors, names) -> Tensors:
    return Tensors((n, real_view(t) if n in names else t) for n, t in tensors.items())


def conjugate(t: torch.Tensor) -> torch.Tensor:
    """The conjugate of a complex tensor's real view, as a real view: the last axis's
    second entry (the imaginary part) negated."""
    out = t.clone()
    out[..., 1].neg_()
    return out


def as_complex(t: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`real_view`: a view of the same memory where the layout allows
    (the parts adjacent, an even offset), else of a contiguous copy."""
    if t.is_complex():
        return t
    try:
        return torch.view_as_complex(t)
    except RuntimeError:
        return torch.view_as_complex(t.clone(memory_format=torch.contiguous_format))


def join(out, who: str) -> tuple[object, list[tuple[int, ...] | None] | None]:
    """A tuple of tensors as one flat tensor of its floating-point members, and their
    shapes (None for a member that is not floating point: an index, a count, a mask, which
    torch marks non-differentiable and gives no upstream gradient); a tensor as it is."""
    if not isinstance(out, (tuple, list)):
        return out, None
    for i, t in enumerate(out):
        text = layout_problem(t, f"{who}'s output {i}", "return it dense (.to_dense()) to have it checked")
        if text:
            raise Unsupported(text)
        if not isinstance(t, torch.Tensor) or t.is_complex():
            raise ContractError(f"{who}'s output {i} must be a tensor (floating point, or integer or bool for a "
                                f"non-differentiable one), got {describe(t)}" + as_tensor_hint(t, "it"))
    floating = [t for t in out if t.is_floating_point()]
    if not out:
        raise ContractError(f"{who} returned an empty tuple of outputs")
    if not floating:
        raise ContractError(f"{who} returns no floating-point output, nothing to differentiate: got "
                            + ", ".join(describe(t) for t in out))
    return (torch.cat([t.reshape(-1) for t in floating]),
            [tuple(t.shape) if t.is_floating_point() else None for t in out])


def split(flat: torch.Tensor, layout: list[tuple[int, ...] | None] | None):
    """The inverse of ``join``: one tensor per output, shaped like it; None for an output
    that is not floating point (no upstream gradient flows into it)."""
    if layout is None:
        return flat
    parts, start = [], 0
    for shape in layout:
        if shape is None:
            parts.append(None)
            continue
        n = math.prod(shape)
        parts.append(flat[start:start + n].reshape(shape))
        start += n
    return tuple(parts)
