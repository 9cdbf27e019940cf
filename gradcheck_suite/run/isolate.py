"""``check --isolate``: each model in a child process, so that a model whose code kills the
process (a segfault in an extension, ``os._exit``, the out-of-memory killer) is that model's
error, with the signal and the phase it was in, and the other models still run.

The child is forked from the command's own process, which has already imported torch and
loaded the models (lambdas and all), so it starts in milliseconds.  It reports its progress
through a pipe, which keeps the progress line and the heartbeat alive, and sends its
``ModelRun`` back at the end.  ``faulthandler`` writes a dying child's stack to a file, from
which the parent names the model's own function that was running.
"""
from __future__ import annotations

import ctypes
import faulthandler
import functools
import multiprocessing
import os
import pickle
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from ..record.blame import user_code
from ..verdict import rules
from .runner import ModelRun, run_model


def run_isolated(model, *, on_case: Callable[[ModelRun], None] | None = None,
                 on_tick: Callable[[ModelRun, str, float], None] | None = None, **kwargs: Any) -> ModelRun:
    """:func:`runner.run_model` in a child process; a child that dies is an error run."""
    _warm_hypothesis()
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    stack = tempfile.NamedTemporaryFile("w+", prefix="gradcheck-suite-", suffix=".stack", delete=False)
    child = ctx.Process(target=_child, args=(model, send, on_tick is not None, kwargs, stack.name), daemon=True)
    child.start()
    send.close()
    shown = ModelRun(model.name, kwargs.get("dtype") or model.dtype, kwargs.get("device", "cpu"))
    phase, result, start = "", None, time.perf_counter()
    try:
        while True:
            if receive.poll(rules.CHILD_POLL):
                try:
                    message, *payload = pickle.loads(receive.recv_bytes())
                except EOFError:
                    break
                if message == "case":
                    shown.checked, shown.nondiff, shown.skipped, shown.shrink_steps = payload[0]
                    phase = ""
                    if on_case is not None:
                        on_case(payload[1])
                elif message == "tick":
                    phase = payload[0]
                    if on_tick is not None:
                        on_tick(shown, *payload)
                elif message == "done":
                    result = payload[0]
                    break
            elif not child.is_alive():
                break
    except KeyboardInterrupt:
        child.terminate()
        raise
    child.join()
    try:
        with open(stack.name) as f:
            where = _where(f.read())
    finally:
        stack.close()
        os.unlink(stack.name)
    if result is not None:
        return result
    run = _died(model, shown, child.exitcode, phase, where)
    run.seconds = time.perf_counter() - start
    return run


@functools.cache
def _warm_hypothesis() -> None:
    """What hypothesis does once per process, done once here rather than in every child.

    Its first test in a process imports the rest of hypothesis, registers torch's random
    state (with a full garbage collection) and scans the loaded modules for constants:
    about 50 ms, which each child would otherwise pay again.
    """
    from hypothesis import Phase, given, settings
    from hypothesis import strategies as st

    from . import strategies  # noqa: F401

    # the first example is the simplest; the next ones make a hundred random draws, one of
    # which surely asks for a constant, which starts the scan
    @settings(max_examples=rules.WARM_EXAMPLES, database=None, deadline=None, phases=[Phase.generate])
    @given(st.lists(st.integers(), min_size=rules.WARM_DRAWS, max_size=rules.WARM_DRAWS))
    def once(_: list) -> None:
        pass
    once()


def _child(model, send, ticks: bool, kwargs: dict, stack: str) -> None:
    faulthandler.enable(open(stack, "w"), all_threads=True)
    _die_with_parent()

    def post(*message) -> None:
        # plain pickle: tensors travel as copies, not as file descriptors that die with this process
        send.send_bytes(pickle.dumps(message))

    def on_case(run: ModelRun) -> None:
        post("case", (run.checked, run.nondiff, run.skipped, run.shrink_steps), run)

    def on_tick(run: ModelRun, phase: str, seconds: float) -> None:
        post("tick", phase, seconds)

    run = run_model(model, on_case=on_case, on_tick=on_tick if ticks else _phase_only(post), **kwargs)
    post("done", run)
    send.close()


def _die_with_parent() -> None:
    """A child outlives a parent killed outright (SIGKILL, a CI job's timeout) and would
    hold its output pipe open: it goes too.  Linux says so in one call; elsewhere a thread
    watches for the parent to change."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:      # PR_SET_PDEATHSIG
            if os.getppid() == parent:                        # not already orphaned
                return
            os._exit(1)
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(rules.PARENT_WATCH)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _phase_only(post):
    """Without a progress display, the phase still reaches the parent, when it changes."""
    last = [""]

    def tick(run: ModelRun, phase: str, seconds: float) -> None:
        if phase != last[0]:
            last[0] = phase
            post("tick", phase, seconds)
    return tick


def _where(dump: str) -> str:
    """The innermost frame of the model's own code in a ``faulthandler`` dump."""
    for path, line, func in re.findall(r'File "([^"]+)", line (\d+) in (\S+)', dump):
        if user_code(path):
            return f"{func} ({os.path.relpath(path)}:{line})"
    return ""


def _died(model, shown: ModelRun, code: int | None, phase: str, where: str) -> ModelRun:
    run = ModelRun(model.name, shown.dtype, shown.device, verdict="error", checked=shown.checked,
                   nondiff=shown.nondiff, skipped=shown.skipped)
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    during = (f" during {phase}" if phase else "") + (f", inside {where}" if where else "")
    run.problems.append(f"the model's process {how}{during}, after {shown.checked + shown.nondiff + shown.skipped} "
                        "case(s) had passed (the model ran in a process of its own: --isolate)")
    return run
