"""Memory of a hand-written backward next to autograd's, for one model at fixed dims.

Two figures per side, measured in untimed rounds on the same inputs as the timed ones:

* **kept**: the bytes held between the forward and the backward, beyond the inputs.
  For autograd, the tensors its graph saves (caught with
  ``torch.autograd.graph.saved_tensors_hooks``).  For the manual path, the tensors in the
  cache its forward returns and, for an ``autograd.Function`` or a custom op, the
  tensors saved on ``ctx`` (the same hooks, around the op's forward with grad on) and
  the tensors set as attributes of ``ctx``.  Each storage counts once, whole (a view
  keeps its whole storage alive), and storages of the inputs (parameters and data) do
  not count: they are held anyway.
* **peak**: the most memory that forward plus backward had allocated at any moment,
  above what was allocated when it started (the inputs and the upstream gradient).
  The gradients it returns count.  On CUDA: ``torch.cuda.max_memory_allocated`` after
  ``torch.cuda.reset_peak_memory_stats``.  On CPU: the allocation events of
  ``torch.profiler.profile(profile_memory=True)`` (every allocation and free of torch's
  CPU allocator, with its size), summed in time order, the running maximum.  numpy
  code's arrays do not pass through torch's allocator: for a numpy model's manual path
  the peak of ``tracemalloc`` (where numpy reports its arrays) is added, an upper bound.

Memory is deterministic for a given torch, device, dtype and thread count, where time
is not: one measurement per row is enough, and a gate on it can be exact.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping

#: How the peak was measured, by device type: recorded in the JSON and the report.
PEAK_METHOD = {"cpu": "torch.profiler allocation events (profile_memory=True), running sum",
               "cuda": "torch.cuda.max_memory_allocated after reset_peak_memory_stats"}


@dataclasses.dataclass(frozen=True)
class Memory:
    """Bytes one side keeps for its backward, and its forward+backward peak (None where
    it could not be measured)."""

    kept: int
    peak: int | None

    def to_json(self) -> dict:
        return {"kept": self.kept, "peak": self.peak}


# --------------------------------------------------------------------------- buffers

def _buffers(obj, seen: set[int] | None = None) -> Iterator[tuple[int, int]]:
    """(start address, bytes) of the storage behind every tensor and numpy array in
    ``obj`` (nested tuples, lists, dicts, namespaces, dataclasses)."""
    import numpy as np
    import torch

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if obj.layout == torch.strided and not obj.is_meta:
            storage = obj.untyped_storage()
            yield storage.data_ptr(), storage.nbytes()
        return
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        yield base.__array_interface__["data"][0], base.nbytes
        return
    if isinstance(obj, Mapping):
        children: Iterable = obj.values()
    elif isinstance(obj, (tuple, list, set, frozenset)):
        children = obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children = (getattr(obj, f.name) for f in dataclasses.fields(obj))
    elif hasattr(obj, "__dict__") and not isinstance(obj, type) and type(obj).__module__ != "builtins":
        children = vars(obj).values()
    else:
        return
    for child in children:
        yield from _buffers(child, seen)


def held_bytes(obj, exclude=()) -> int:
    """The bytes of the unique storages behind ``obj``, leaving out any that lie inside a
    storage of ``exclude`` (the inputs)."""
    inputs = list(_buffers(exclude))
    total, counted = 0, set()
    for start, size in _buffers(obj):
        if start in counted or any(s <= start < s + n for s, n in inputs if n):
            continue
        counted.add(start)
        total += size
    return total


@contextlib.contextmanager
def saved_tensors() -> Iterator[list]:
    """Collect every tensor autograd saves for the backward inside the block."""
    import torch

    saved: list = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


def ctx_attributes(outputs) -> list:
    """Tensors set as attributes of a Function's ``ctx`` (``ctx.x = x``), from the nodes
    that made ``outputs``."""
    import torch

    found = []
    for out in outputs if isinstance(outputs, (tuple, list)) else (outputs,):
        node = getattr(out, "grad_fn", None) if isinstance(out, torch.Tensor) else None
        attrs = getattr(node, "__dict__", None)
        if attrs:
            found.append(dict(attrs))
    return found


# --------------------------------------------------------------------------- peak

@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """fd 2 to /dev/null: the profiler's C++ side prints a line at each start and stop."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _allocation_deltas(prof) -> list[tuple[int, int]]:
    """(time in ns, bytes) of every CPU allocation (+) and free (-) the profiler saw."""
    deltas = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        extra = event.extra_fields
        if type(extra).__name__ == "_ExtraFields_Allocation" and extra.device.type == "cpu":
            deltas.append((event.start_time_ns, int(extra.alloc_size)))
        stack.extend(event.children)
    return sorted(deltas, key=lambda d: d[0])


def cpu_peak(run: Callable[[], object]) -> tuple[int, object]:
    """The most bytes torch's CPU allocator held at once while ``run`` ran, above the start."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():
        prof.start()
    try:
        result = run()
    finally:
        with _quiet_stderr():
            prof.stop()
    level = peak = 0
    for _, size in _allocation_deltas(prof):
        level += size
        peak = max(peak, level)
    return peak, result


def cuda_peak(run: Callable[[], object], device: str) -> tuple[int, object]:
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    result = run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - start, result


def numpy_peak(run: Callable[[], object]) -> tuple[int, object]:
    """The peak that ``tracemalloc`` saw above the start (numpy reports its arrays there)."""
    import tracemalloc

    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        result = run()
        return max(0, tracemalloc.get_traced_memory()[1] - start), result
    finally:
        if started:
            tracemalloc.stop()


def peak(run: Callable[[], object], device: str, numpy: bool = False) -> int:
    """Forward+backward's peak above the start on ``device``: one code path for CPU and
    CUDA, only the probe differs."""
    import gc

    gc.collect()
    if device.startswith("cuda"):
        probe = lambda f: cuda_peak(f, device)      # noqa: E731
    else:
        probe = cpu_peak
    if numpy:
        extra = {}

        def traced():
            extra["numpy"], result = numpy_peak(run)
            return result
        found, _ = probe(traced)
        return found + extra["numpy"]
    found, _ = probe(run)
    return found


# --------------------------------------------------------------------------- one model

def measure(model, dims: Mapping[str, int], device: str = "cpu", dtype: str = "float32",
            seed: int = 0) -> dict:
    """{"manual": Memory, "autograd": Memory} for ``model`` at ``dims``, on the inputs the
    timed regions use (same seed)."""
    import torch

    from ..verdict.oracles import differentiated
    from .setup import autograd_inputs, setup

    model, p, d, g = setup(model, dims, device, dtype, seed)
    numpy = model.held_as.numpy_arrays

    # manual: the cache its forward returns, and what an op saves on ctx
    with torch.no_grad():
        _, cache = model.forward(p, d)
    kept_objects = [cache]
    if model.op is not None:
        leaves = {n: p[n].detach().requires_grad_(True) for n in model.op.inputs}
        with torch.enable_grad(), saved_tensors() as saved:
            outs = model.op.invoke(leaves, d, model.h)
        kept_objects += [saved, ctx_attributes(outs)]
        del outs
    manual_kept = held_bytes(kept_objects, exclude=(p, d, g))
    del cache, kept_objects

    def manual():
        with torch.no_grad():
            _, c = model.forward(p, d)
            return model.backward(p, d, c, g)
    manual_peak = peak(manual, device, numpy=numpy)

    # autograd: what its graph saves; the leaves are copies of the inputs
    P, D, inputs = autograd_inputs(model, p, d)
    with torch.enable_grad(), saved_tensors() as saved:
        out = differentiated(model, P, D)
    autograd_kept = held_bytes(saved, exclude=(P, D, g))
    del out, saved

    def autograd():
        with torch.enable_grad():
            return torch.autograd.grad(differentiated(model, P, D), inputs, g, allow_unused=True)
    autograd_peak = peak(autograd, device)
    return {"manual": Memory(manual_kept, manual_peak), "autograd": Memory(autograd_kept, autograd_peak)}
