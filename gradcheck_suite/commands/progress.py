"""The progress line of a running check, and its heartbeat off a terminal: shared by the
command line (``check``, ``train``) and the pytest plugin.

Stdlib only: the plugin imports it while a test runs, before torch is needed.
"""
from __future__ import annotations

import os
import time

from ..verdict import rules



def heartbeat_interval() -> float:
    """Seconds between heartbeat lines: ``GRADCHECK_SUITE_HEARTBEAT`` where it is a number
    (below 0 counts as 0), else ``rules.HEARTBEAT``."""
    try:
        return max(0.0, float(os.environ.get("GRADCHECK_SUITE_HEARTBEAT", rules.HEARTBEAT)))
    except ValueError:
        return rules.HEARTBEAT


class Progress:
    """One line on stderr while a model runs: which model, how many cases so far, the phase
    of the running case and the time.  It is redrawn after every case and, while a case
    runs, by the waiting thread every ``rules.TICK`` seconds (see ``limits.run_case``).
    With ``heartbeat`` (stderr is not a terminal), the same facts go out as a plain line,
    at most once every ``heartbeat`` seconds, naming the model's own code that is running.

    ``stream`` is anything with ``write(text, end="\\n")``."""

    def __init__(self, stream, total: int, enabled: bool, goal: int, heartbeat: float | None = None):
        self.stream, self.total, self.enabled, self.goal = stream, total, enabled, goal
        self.heartbeat, self.last = heartbeat, time.monotonic()
        self.label, self.t0, self.done, self.phase, self.shrinking = "", 0.0, 0, "", False

    def start(self, i: int, name: str, dtype: str, device: str) -> None:
        self.label = f"[{i + 1}/{self.total}] {name} {dtype} {device}"
        self.t0, self.done, self.phase, self.shrinking = time.monotonic(), 0, "", False
        self._draw()

    def update(self, run) -> None:
        self.done = run.checked + run.nondiff + run.skipped + run.shrink_steps
        self.shrinking, self.phase = run.failure is not None, ""
        self._draw()

    def tick(self, run, phase: str, seconds: float) -> None:
        self.phase = phase
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        state = f"shrinking, step {self.done}" if self.shrinking else f"case {min(self.done + 1, self.goal)}/{self.goal}"
        phase = self.phase
        if phase.startswith("diagnosis"):     # after the cases: the mistake and its line
            state, phase = phase, ""
        text = ", ".join(filter(None, [f"{self.label}: {state}", phase, f"{time.monotonic() - self.t0:.1f}s"]))
        if self.heartbeat is None:
            self.stream.write("\r\x1b[K" + text[:rules.WIDTH - 1], end="")
        elif time.monotonic() - self.last >= self.heartbeat:
            self.last = time.monotonic()
            self.stream.write(f"gradcheck-suite: still running {text}")

    def clear(self) -> None:
        if self.enabled and self.heartbeat is None:
            self.stream.write("\r\x1b[K", end="")
