"""Limits on one case: time (a case that hangs is abandoned) and memory (a case that
cannot fit is refused before any tensor is made).

Time.  The case runs in a worker thread; the calling thread waits on it in short
steps, reporting the phase and the elapsed time at each step (the progress line
redraws from there), and gives up at the limit.  This works on any thread and under
any test runner: no signal handler is installed (``SIGALRM`` belongs to the main
thread only and to tools such as pytest-timeout, and a signal is not handled until a
long C call returns anyway).  A thread cannot be killed, so an abandoned case gets an
exception raised asynchronously in its thread: Python code (a ``while`` loop) stops at
its next line, while a call blocked in C (a sleep, a huge matmul) finishes first and
then stops.  The thread is a daemon, so it never holds the process open.  Ctrl-C
reaches the waiting thread at once, and the case is abandoned the same way.
"""
from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping

from ..check.case import Case
from ..check import ERROR, CaseResult, check_case
from ..record.spec import Model
from ..verdict import rules

_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex64": 8, "complex128": 16}


def keep_freed_memory() -> bool:
    """Ask the C library's allocator (glibc) to keep the memory the process frees for its
    next allocations, instead of handing it back to the system at once.

    A case allocates and frees a few dozen tensors the size of its largest one, and the
    next case asks for the same again; memory handed back must be faulted in page by page
    when it is reused, which costs as much as the arithmetic at a seed size (2-3 ms of a
    10 ms case on a 2-core VM: benchmarks/check_speed.py with and without --cli-allocator).
    The CLI calls this once: memory stays with the
    process until it exits.  Elsewhere (no glibc) it does nothing and returns False."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(mallopt(option, value) == 1 for option, value in (
        (m_mmap_threshold, rules.MALLOC_MMAP_THRESHOLD),
        (m_trim_threshold, rules.MALLOC_TRIM_THRESHOLD),
        (m_top_pad, rules.MALLOC_TOP_PAD)))


class CaseTimeout(BaseException):
    """A case went past its time limit; ``result`` is its error verdict.

    A BaseException, so that hypothesis does not shrink it: every shrink step would wait
    out the limit again."""

    def __init__(self, result: CaseResult):
        super().__init__(result.problems[0])
        self.result = result


class _Abandoned(BaseException):
    """Raised inside an abandoned case's thread to stop its Python code."""


def run_case(model: Model, case: Case, *, timeout: float | None = None,
             tick: Callable[[str, float], None] | None = None) -> CaseResult:
    """``check_case`` in a worker thread, abandoned after ``timeout`` seconds (None: no limit).

    ``tick(phase, seconds)`` is called from the calling thread every ``rules.TICK`` seconds while
    the case runs.  Raises :class:`CaseTimeout` at the limit.
    """
    if timeout is None and tick is None:
        return check_case(model, case)
    _warm_up(case.device)
    res = CaseResult(model.name, case)

    def timed_out(worker: threading.Thread, elapsed: float) -> BaseException:
        return CaseTimeout(_timed_out(model, case, res.phase, timeout, elapsed, running_in(worker)))

    return run_ticking(lambda: check_case(model, case, res), lambda: res.phase, tick, timeout, timed_out,
                       name=f"gradcheck-case-{model.name}")


def run_ticking(fn: Callable[[], object], phase: str | Callable[[], str], tick: Callable[[str, float], None] | None,
                timeout: float | None = None,
                timed_out: Callable[[threading.Thread, float], BaseException] | None = None, *, name: str = ""):
    """``fn()`` in a worker thread while the calling thread reports ``tick(phase, seconds)``
    every ``rules.TICK`` seconds (``phase`` a string, or a function read at each tick); abandoned
    (see the module's docstring) after ``timeout`` seconds, raising ``timed_out(worker,
    seconds)`` or else :class:`TimeoutError`.  Without ``tick`` or ``timeout`` it runs in
    the calling thread."""
    if tick is None and timeout is None:
        return fn()
    outcome: list = []
    now = phase if callable(phase) else (lambda: phase)

    def work() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as e:  # handed to the calling thread
            outcome.append((False, e))

    worker = threading.Thread(target=work, name=name or f"gradcheck-{now()}", daemon=True)
    start = time.monotonic()
    worker.start()
    try:
        while True:
            worker.join(rules.TICK if timeout is None else min(rules.TICK, max(0.0, start + timeout - time.monotonic())))
            if not worker.is_alive():
                break
            elapsed = time.monotonic() - start
            if timeout is not None and elapsed >= timeout:
                error = (timed_out(worker, elapsed) if timed_out is not None
                         else TimeoutError(f"{now()} did not finish within {timeout:g} s"))
                _abandon(worker)
                raise error
            if tick is not None:
                tick(now(), elapsed)
    except KeyboardInterrupt:
        _abandon(worker)
        raise
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _warm_up(device: str) -> None:
    """Torch imports modules on the first use of autograd, and CUDA starts on its first
    tensor (seconds); both happen here, before the clock starts, so they are never
    charged to a case."""
    import torch

    from ..verdict.oracles import weighted
    try:
        x = torch.zeros(1, device=device, requires_grad=True)
        y = 2 * x
        torch.autograd.grad(weighted(y, torch.ones_like(y)), x)    # as oracles.autograd calls it
    except Exception:  # a device that fails here fails the case too, with the message where it belongs
        pass


def _timed_out(model: Model, case: Case, phase: str, limit: float, elapsed: float, where: str = "") -> CaseResult:
    res = CaseResult(model.name, case, verdict=ERROR, seconds=elapsed, phase=phase)
    inside = f", inside {where}" if where else ""
    ranks = sys.modules.get("gradcheck_suite.kinds.ranks")
    busy = ranks.busy_text() if model.sharded is not None and ranks is not None else ""
    on_ranks = f" ({busy}: its ranks were killed)" if busy else ""
    res.problems.append(f"{phase or 'the case'} did not finish within {limit:g} s (--case-timeout){inside}"
                        f"{on_ranks}; the case was abandoned")
    return res


def running_in(worker: threading.Thread) -> str:
    """The model's own function the worker is running now, as ``forward (my_model.py:12)``:
    the innermost frame of the user's code (not torch's, numpy's or the harness's)."""
    from ..record.blame import user_code
    frame = sys._current_frames().get(worker.ident) if worker.ident is not None else None
    while frame is not None:
        if user_code(frame.f_code.co_filename):
            return f"{frame.f_code.co_name} ({os.path.relpath(frame.f_code.co_filename)}:{frame.f_lineno})"
        frame = frame.f_back
    return ""


def _abandon(worker: threading.Thread) -> None:
    """Stop the worker's Python code at its next line (see the module's docstring)."""
    if worker.ident is not None and worker.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(_Abandoned))


# -- memory ----------------------------------------------------------------------------

def case_bytes(model: Model, dims: Mapping[str, int], dtype: str) -> int:
    """Bytes a case at these dims needs at least: copies of its tensors, none of the forward's own."""
    elements = sum(math.prod(model.shape(n, dims)) for n in (*model.params, *model.data))
    float64 = 16 if dtype.startswith("complex") else 8      # its float64 copies: two parts an element
    return elements * (rules.COPIES * _ITEMSIZE.get(dtype, 8) + rules.COPIES64 * float64)


def available_bytes(device: str) -> int | None:
    """Memory free for a case on ``device`` now, or None when it cannot be told."""
    if device == "cuda":
        import torch
        try:
            return int(torch.cuda.mem_get_info()[0])
        except Exception:
            return None
    free = [_meminfo(), _cgroup_room()]
    if free == [None, None]:
        try:
            free[0] = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return min(f for f in free if f is not None)


def _meminfo() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """What a container's memory limit (cgroup v2) leaves: the OOM killer acts on it first."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read())
        return None if limit == "max" else int(limit) - used
    except (OSError, ValueError):
        return None


def too_large(model: Model, dims: Mapping[str, int], dtype: str, device: str,
              hyper: Mapping[str, object] | None = None) -> str | None:
    """Why the largest case at these fixed dims cannot fit in memory, or None.

    Dims not given are taken at the top of their range: hypothesis draws the ends often.
    """
    full = largest(model, dims, hyper or {})
    free = available_bytes(device)
    try:
        need = case_bytes(model, full, dtype)
    except Exception:    # a shape the record cannot give at these values: the check will say so
        return None
    if free is None or need <= free:
        return None
    shown = ", ".join(f"{k}={v}" if k in dims else f"{k}<={v}" for k, v in full.items() if k in model.dims)
    return f"{model.name}: refused: a {dtype} case at {shown} needs about {_size(need)}; {_size(free)} is free on {device}"


def largest(model: Model, dims: Mapping[str, int], hyper: Mapping[str, object]) -> dict[str, object]:
    """The given values, and every other dim and hyperparameter at its largest, bounds that
    read other dims resolved in dependency order."""
    from ..record import dimexpr
    from ..record.spec import Dim

    specs = {**model.dims, **model.hyper}
    given = {**dims, **hyper}
    bounded = {k: v.reads() for k, v in specs.items() if isinstance(v, Dim)}
    got: dict[str, object] = {}
    for name in dimexpr.order(bounded) + [k for k in model.hyper if k not in bounded]:
        spec = specs[name]
        if name in given:
            got[name] = given[name]
        elif isinstance(spec, Dim):
            got[name] = spec.bounds(got)[1]
        else:
            numbers = [c for c in spec if isinstance(c, (int, float)) and not isinstance(c, bool)]
            got[name] = max(numbers) if numbers else spec[0]
    return got


def _size(n: float) -> str:
    units = ("bytes", "KB", "MB", "GB", "TB", "PB", "EB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} bytes" if i == 0 else f"{n:.1f} {units[i]}"
