"""What a command found, and how it ended: its problems, the models it ran, the exit code
and the JSON report, written once at the end (:class:`Outcome`); and the text streams
that a closed pipe silences (:class:`Stream`).

Exit codes: 0 every model passed, 1 a model failed or errored (a broken model file
included), 2 a usage error, 3 a merge whose reports are not the N parts of one run (a part
missing or given twice, parts of different runs), 130 interrupted.
"""
from __future__ import annotations

import json
import os
import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_INCOMPLETE = 3
JSON_VERSION = 1


def unwritable(path: str, option: str = "--json") -> str | None:
    """Why the report cannot be written to ``path``, found before any work is done."""
    if os.path.isdir(path):
        return f"{option} {path}: is a folder, not a file"
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        return f"{option} {path}: cannot write the report there ({e.strerror or e})"
    if not existed:
        os.remove(path)
    return None


class Stream:
    """A text stream that a closed pipe (``| head``, ``| true``) silences: the run goes on,
    and the JSON report and the exit code still tell the outcome."""

    def __init__(self, f):
        self.f = f

    def write(self, text: str, end: str = "\n") -> None:
        if self.f is None:
            return
        try:
            self.f.write(text + end)
            self.f.flush()
        except (BrokenPipeError, ValueError):
            try:  # the interpreter's last flush must not fail either
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.f.fileno())
            except (OSError, ValueError):
                pass
            self.f = None

    def isatty(self) -> bool:
        return self.f is not None and self.f.isatty()


class Outcome:
    """What the command found: problems, runs, and how it ended; written once, at the end."""

    def __init__(self, json_path: str | None):
        self.json_path = json_path
        # with the JSON on stdout, everything meant for people goes to stderr
        self.err = Stream(sys.stderr)
        self.out = self.err if json_path == "-" else Stream(sys.stdout)
        self.problems: list[str] = []
        self.usage = False             # a usage error: exit 2
        self.errors = 0                # model files that did not load: exit 1
        self.model_problems: list[str] = []   # those problems' texts (the others are usage errors)
        self.runs: list = []           # (ModelRun, its --models-from) of every model checked
        self.trained: list | None = None   # TrainResult of every model trained
        self.listed: list | None = None
        self.interrupted = False
        self.planned = 0               # runs planned, for the summary of an interrupted check
        self.isolated = False          # each model ran in a child process
        self.verbose = False
        self.summarize = False         # the summary line, once a check has begun
        self.incomplete = False        # merge: the reports are not the N parts of one run
        self.fields: dict = {}         # more top-level fields of the JSON report (a shard's part)

    def usage_error(self, text: str) -> None:
        self.err.write(f"gradcheck-suite: error: {text}")
        self.problems.append(text)
        self.usage = True

    def model_error(self, text: str, traceback: str | None = None) -> None:
        self.err.write(f"gradcheck-suite: model error: {text}")
        if self.verbose and traceback:
            self.err.write(traceback)
        self.problems.append(text)
        self.model_problems.append(text)
        self.errors += 1

    def interrupt(self) -> None:
        self.interrupted = True
        self.err.write("gradcheck-suite: interrupted; the report covers what finished")

    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.usage:
            return EXIT_USAGE
        if self.incomplete:
            return EXIT_INCOMPLETE
        if self.errors or any(r.verdict != "pass" for r, _ in self.runs) or \
                any(r.verdict != "same" for r in self.trained or ()):
            return EXIT_FAILED
        return EXIT_OK

    def summary(self) -> str:
        if self.trained is not None:
            verdicts = ("same", "manual diverges", "both diverge", "error")
            parts = [f"{sum(r.verdict == v for r in self.trained)} {v}" for v in verdicts]
            if self.problems:
                parts.append(f"{len(self.problems)} problem{'s' * (len(self.problems) != 1)} above")
            return ", ".join(parts)
        counts = {v: sum(r.verdict == v for r, _ in self.runs) for v in ("pass", "fail", "error")}
        parts = [f"{counts['pass']} passed", f"{counts['fail']} failed"]
        errors = counts["error"] + self.errors
        usage = len(self.problems) - self.errors
        if errors:
            parts.append(f"{errors} error{'s' * (errors != 1)}")
        if usage:
            parts.append(f"{usage} usage error{'s' * (usage != 1)}")
        if self.interrupted and self.planned > len(self.runs):
            parts.append(f"{self.planned - len(self.runs)} not run (interrupted)")
        return ", ".join(parts)

    def finish(self) -> int:
        code = self.exit_code()
        if self.summarize:
            self.out.write(f"\n{self.summary()}")
        torch = sys.modules.get("torch")
        models = self.listed or []
        if self.runs:  # the report module loads torch: only when something ran
            from ..run.report import run_json
            models = [run_json(r, asked) for r, asked in self.runs]
        elif self.trained is not None:
            models = [r.to_json() for r in self.trained]
        self._write_json({"version": JSON_VERSION, "torch": getattr(torch, "__version__", None), "exit_code": code,
                          "interrupted": self.interrupted, "isolated": self.isolated, "problems": self.problems, "models": models,
                          **self.fields})
        return code

    def _write_json(self, doc: dict) -> None:
        if not self.json_path:
            return
        text = json.dumps(doc, indent=2)
        if self.json_path == "-":
            Stream(sys.stdout).write(text)
            return
        try:
            with open(self.json_path, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            self.err.write(f"gradcheck-suite: error: cannot write the JSON report: {e}")
