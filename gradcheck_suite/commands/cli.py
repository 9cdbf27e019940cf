"""gradcheck-suite list | check | bench.

Exit codes: 0 every model passed, 1 a model failed or errored (a broken model file
included), 2 a usage error (an unknown model, a bad option, a missing file, CUDA asked
for but absent, a case too large for memory), 130 interrupted.  Every problem is one
line on stderr and an entry of the JSON report's ``problems``; a problem with one model
or file leaves the others to run, and the JSON report is written whatever happens.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import time

from .. import __version__
from .options import SEEDS, WIDTH, case_timeout, model_names, number, pairs
from ..verdict import rules

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
JSON_VERSION = 1


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """One line per mistake, and no abbreviations: ``--models`` is never ``--models-from``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, and the JSON report still written
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line; a subcommand's names may come before, between or after its options."""
    ap = _parser()
    command = argv[0] if argv else None
    if command not in ap.commands:        # --help, --version, no command or an unknown one
        return ap.parse_args(argv)
    args = ap.commands[command].parse_intermixed_args(argv[1:])
    args.command = command
    return args


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="gradcheck-suite",
        description="Check hand-written backward passes against autograd and finite differences.",
        epilog="Exit codes: 0 all pass, 1 a model fails or errors, 2 usage error, 130 interrupted.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{list,check,train,bench,init}")

    def common(p: argparse.ArgumentParser, verb: str = "check") -> None:
        p.add_argument("--models", action="append", default=[], metavar="NAME[,NAME...]",
                       help=f"models to {verb}, the same as NAME ...: comma-separated, repeatable "
                            "(default: the settings' models, else all)")
        p.add_argument("--models-from", action="append", default=[], metavar="PATH",
                       help="a model file, a folder of them, or a dotted module name; repeatable (default: none)")
        p.add_argument("--json", metavar="FILE",
                       help="also write a JSON report to FILE; '-' writes it to stdout and the rest to stderr")
        p.add_argument("--verbose", "-v", action="store_true", help="show tracebacks from model code")
        p.add_argument("--builtin", action="store_true",
                       help="also the built-in example models (default: only where the project's settings say "
                            "builtin = true, or when named)")

    p = sub.add_parser("list", help="list the models: the project's first, then the built-in examples")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to list, or comma-separated NAME,NAME "
                                                             "(default: all)")
    common(p, "list")

    p = sub.add_parser("check", help="check models' backward passes on generated cases")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to check, or comma-separated NAME,NAME "
                                                             "(default: all)")
    common(p)
    p.add_argument("--dims", metavar="K=V,...", help="fix dimensions, e.g. N=64,D_in=1000 (may exceed the generated ranges)")
    p.add_argument("--hyper", metavar="K=V,...", help="fix hyperparameters, e.g. stride=2,bias=True (default: drawn)")
    p.add_argument("--dtype", metavar="DTYPE[,DTYPE]", help="float64, float32, ... (default: each model's own)")
    p.add_argument("--device", default="cpu", metavar="DEVICE[,DEVICE]", help="cpu, cuda or both, comma-separated (default: cpu)")
    p.add_argument("--examples", metavar="N", help="generated cases per model (default: the profile's, 20 for quick)")
    p.add_argument("--seed", metavar="S", help=f"fix the seed of the case's values, {SEEDS[0]} to {SEEDS[1]} (default: drawn)")
    p.add_argument("--scale", metavar="X", help="fix the value scale (default: drawn from 1e-3 to 1e3)")
    p.add_argument("--case-timeout", metavar="SECONDS", default=str(rules.CASE_TIMEOUT),
                   help=f"a case running longer is abandoned as an error; 0 for no limit (default: {rules.CASE_TIMEOUT:g})")
    p.add_argument("--profile", default=None, choices=["quick", "nightly"],
                   help="hypothesis profile (default: the project's, else quick)")
    p.add_argument("--threads", metavar="N", default=str(rules.THREADS),
                   help=f"torch intra-op threads for the checks; more cores are better used by running "
                        f"models in parallel (pytest -n auto) (default: {rules.THREADS})")
    p.add_argument("--no-progress", action="store_true", help="no progress line (default: shown on a terminal)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each model in a child process: one that crashes the process (a segfault, os._exit, "
                        "out of memory) is its own error, and the others run (default: on when every run is on "
                        "the CPU, where it costs a fork a model: tens of milliseconds, see docs/cli.md)")

    from .scaffold import KINDS, kind_choice
    p = sub.add_parser("init", help="write a starting model file that passes the check")
    p.add_argument("kind", choices=KINDS, type=kind_choice, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    p.add_argument("name", metavar="NAME", help="the model's name; the file is NAME.py")
    p.add_argument("--out", metavar="PATH", help="where to write the file (default: NAME.py here)")

    from .train import add_parser
    add_parser(sub, common)

    sub.add_parser("bench", help="time manual backward against autograd and write a report "
                                 "(gradcheck-suite bench --help)")
    ap.commands = sub.choices      # each subcommand's own parser, by name
    return ap


def _isolate(asked: bool | None, plan: list, rep) -> bool:
    """--isolate as asked; by default whenever every run is on the CPU, one model too: a
    model that kills its process is then a line naming it, exit 1 and a JSON report, not a
    command that dies with the model's own exit code (a fork a model).

    The children are forked: cheap where fork exists, and safe only before CUDA is in use.
    """
    import multiprocessing
    forks = "fork" in multiprocessing.get_all_start_methods()
    if asked is None:
        return forks and all(dev == "cpu" for _, _, dev, _ in plan)
    if asked and not forks:
        rep.usage_error("--isolate: this platform cannot fork a process; the models run in this one")
        return False
    return asked


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its options are its own: hand them over unparsed
        from .. import bench
        return bench.main(argv[1:])
    try:
        args = _parse(argv)
    except _UsageError as e:
        rep = _Report(_json_option(argv))
        rep.usage_error(str(e))
        return rep.finish()
    if args.command == "init":
        return _init(args)
    rep = _Report(args.json)
    if rep.json_path not in (None, "-"):
        problem = _unwritable(rep.json_path)
        if problem:  # nothing runs when its report cannot be kept
            rep.json_path = None
            rep.usage_error(problem)
            return rep.finish()
    try:
        if not _settings(rep, args):
            pass
        elif args.command == "list":
            _list(rep, args)
        elif args.command == "train":
            _train(rep, args)
        else:
            _check(rep, args)
    except KeyboardInterrupt:
        rep.interrupt()
    return rep.finish()


def _json_option(argv: list[str]) -> str | None:
    """The --json path of a command line that could not be parsed as a whole."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--json")
    try:
        path = pre.parse_known_args(argv)[0].json
    except SystemExit:
        return None
    return None if path is None or (path != "-" and _unwritable(path)) else path


def _unwritable(path: str) -> str | None:
    """Why the JSON report cannot be written to ``path``, found before any work is done."""
    if os.path.isdir(path):
        return f"--json {path}: is a folder, not a file"
    existed = os.path.exists(path)
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        return f"--json {path}: cannot write the report there ({e.strerror or e})"
    if not existed:
        os.remove(path)
    return None


class _Stream:
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


class _Report:
    """What the command found: problems, runs, and how it ended; written once, at the end."""

    def __init__(self, json_path: str | None):
        self.json_path = json_path
        # with the JSON on stdout, everything meant for people goes to stderr
        self.err = _Stream(sys.stderr)
        self.out = self.err if json_path == "-" else _Stream(sys.stdout)
        self.problems: list[str] = []
        self.usage = False             # a usage error: exit 2
        self.errors = 0                # model files that did not load: exit 1
        self.runs: list = []           # (ModelRun, its --models-from) of every model checked
        self.trained: list | None = None   # TrainResult of every model trained
        self.listed: list | None = None
        self.interrupted = False
        self.planned = 0               # runs planned, for the summary of an interrupted check
        self.isolated = False          # each model ran in a child process
        self.verbose = False
        self.summarize = False         # the summary line, once a check has begun

    def usage_error(self, text: str) -> None:
        self.err.write(f"gradcheck-suite: error: {text}")
        self.problems.append(text)
        self.usage = True

    def model_error(self, text: str, traceback: str | None = None) -> None:
        self.err.write(f"gradcheck-suite: model error: {text}")
        if self.verbose and traceback:
            self.err.write(traceback)
        self.problems.append(text)
        self.errors += 1

    def interrupt(self) -> None:
        self.interrupted = True
        self.err.write("gradcheck-suite: interrupted; the report covers what finished")

    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.usage:
            return EXIT_USAGE
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
                          "interrupted": self.interrupted, "isolated": self.isolated, "problems": self.problems, "models": models})
        return code

    def _write_json(self, doc: dict) -> None:
        if not self.json_path:
            return
        text = json.dumps(doc, indent=2)
        if self.json_path == "-":
            _Stream(sys.stdout).write(text)
            return
        try:
            with open(self.json_path, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            self.err.write(f"gradcheck-suite: error: cannot write the JSON report: {e}")


def _settings(rep: _Report, args) -> bool:
    """The project's ``[tool.gradcheck-suite]`` under what the command line leaves open:
    models, files, profile and dtypes.  False where the settings themselves are wrong."""
    from ..run.config import ConfigError, find
    try:
        cfg = find()
    except ConfigError as e:
        rep.usage_error(str(e))
        return False
    args.config = cfg
    if hasattr(args, "models"):    # NAME ..., --models, comma lists: one list of names
        args.names = model_names(args.names, args.models)
    args.asked = list(getattr(args, "names", []) or [])       # named on the command line
    args.from_config = not args.models_from and bool(cfg.models_from)
    if args.from_config:
        args.models_from = list(cfg.models_from)
    if args.command != "list" and getattr(args, "names", None) == [] and cfg.models:   # list: every model
        args.names = list(cfg.models)
    if getattr(args, "profile", "") is None:
        args.profile = cfg.profile or "quick"
    if args.command == "check" and args.dtype is None and cfg.dtypes:   # train: one dtype, the model's
        args.dtype = ",".join(cfg.dtypes)
    return True


def _load(rep: _Report, args, names: list[str] = ()):
    """The registry, with its problems reported; a name defined in a model file that did
    not load is that file's problem (exit 1), not an unknown name.  The built-in example
    models come along unless the project's settings name its own and leave them out."""
    from ..run import registry
    rep.verbose = args.verbose
    cfg = args.config
    # the built-in models are examples: loaded when asked for, by the option, the settings or a name
    # (list shows them too where the project has no models of its own, marked as examples)
    builtin = args.builtin or cfg.builtin is True or bool(args.asked) or (args.command == "list" and not args.models_from)
    reg = registry.load(args.models_from, builtin=builtin, root=cfg.folder)
    for text in reg.not_found:
        rep.usage_error(text)
    lost = {text: [] for text in reg.problems}
    for name in names:
        if name not in reg:
            where = next((t for t in reg.problems if _defines(t, name)), None)
            if where is not None:
                lost[where].append(name)
    for text, missing in lost.items():
        suffix = f"; not checked: {', '.join(missing)}" if missing else ""
        rep.model_error(text + suffix, reg.tracebacks.get(text))
    return reg, {n for ns in lost.values() for n in ns}


def _defines(problem: str, name: str) -> bool:
    """Whether the model file a load problem is about mentions the model ``name``."""
    path = problem.split(":", 1)[0]
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return re.search(rf"\b{re.escape(name)}\b", f.read()) is not None
    except OSError:
        return False


def _list(rep: _Report, args) -> None:
    """The project's own models first; then the built-in examples under a line that says so
    (only where asked for, as check and bench have them, or where the project has none)."""
    reg, lost = _load(rep, args, args.names)
    models = _selected(rep, args, reg, lost)
    own = [m for m in models if m.name not in reg.builtin]
    examples = [m for m in models if m.name in reg.builtin]
    rep.listed = []
    if examples and not own and not (args.models_from or args.asked or args.builtin or args.config.builtin):
        rep.out.write(textwrap.fill("no models of the project's own: " + NOTHING_CONFIGURED.split(": ", 1)[1], WIDTH)
                      + "\n")
    for m in own:
        _list_row(rep, reg, m)
    if examples:
        when = "" if args.builtin or args.config.builtin is True else ", checked only with --builtin or by name"
        rep.out.write(("\n" if own else "") + f"built-in examples{when}:")
    for m in examples:
        _list_row(rep, reg, m)


def _list_row(rep: _Report, reg, m) -> None:
    dims = ", ".join(f"{k}∈[{d.low},{d.high}] bench {d.bench}" for k, d in m.dims.items())
    row = {"name": m.name, "dtype": m.dtype, "dims": {k: vars(d) for k, d in m.dims.items()},
           "differentiable": list(m.differentiable), "origin": reg.origin(m.name),
           "builtin": m.name in reg.builtin, "doc": (m.doc or "").strip().splitlines()[0] if m.doc else ""}
    rep.listed.append(row)
    pad = " " * 21
    text = [textwrap.fill(f"{m.name:<20} {m.dtype:<8} grads: {', '.join(m.differentiable)}", WIDTH,
                          subsequent_indent=pad + " " * 16),
            textwrap.fill(f"dims: {dims}", WIDTH, initial_indent=pad, subsequent_indent=pad + " " * 6)]
    if row["doc"]:
        text.append(textwrap.fill(row["doc"], WIDTH, initial_indent=pad, subsequent_indent=pad))
    rep.out.write("\n".join(text))


def _options(rep: _Report, args) -> dict:
    """The check's options, validated up front; every mistake is reported, not just the first."""
    from ..record.spec import DTYPES

    opts = {"dims": {}, "hyper": {}, "examples": None, "seed": None, "scale": None, "case_timeout": None,
            "threads": rules.THREADS}
    parse = {
        "dims": lambda: _parse_dims(args.dims),
        "hyper": lambda: _parse_hyper(args.hyper),
        "threads": lambda: number("--threads", args.threads),
        "examples": lambda: number("--examples", args.examples),
        "seed": lambda: number("--seed", args.seed, int, *SEEDS, f"a whole number from {SEEDS[0]} to {SEEDS[1]}"),
        "scale": lambda: number("--scale", args.scale, float, 0, None, "a positive finite number", above_low=True),
        "case_timeout": lambda: case_timeout("--case-timeout", args.case_timeout),
    }
    parse_into(rep, args, opts, parse)
    opts["dtypes"] = args.dtype.split(",") if args.dtype else [None]
    for dt in opts["dtypes"]:
        if dt is not None and dt not in DTYPES:
            rep.usage_error(f"--dtype {dt!r} is not one of {', '.join(DTYPES)}")
    opts["devices"] = args.device.split(",")
    for dev in opts["devices"]:
        if dev not in ("cpu", "cuda"):
            rep.usage_error(f"--device {dev!r}: use cpu, cuda or cpu,cuda")
    return opts


def parse_into(rep: _Report, args, opts: dict, parse: dict) -> bool:
    """Each option given on the command line, parsed into ``opts``; every mistake reported
    in one line (not just the first).  False where any was wrong."""
    ok = True
    for key, value in parse.items():
        if getattr(args, key) is not None:
            try:
                opts[key] = value()
            except ValueError as e:
                rep.usage_error(str(e))
                ok = False
    return ok


def _parse_dims(text: str | None) -> dict[str, int]:
    dims = {}
    for key, value in pairs("--dims", text, "N=64,D_in=1000"):
        try:
            size = int(value)
        except ValueError:
            raise ValueError(f"--dims: {key}={value!r} is not a whole number") from None
        if size < 1:
            raise ValueError(f"--dims: {key}={size} must be at least 1")
        dims[key] = size
    return dims


NOTHING_CONFIGURED = ("no models configured: add [tool.gradcheck-suite] models-from = \"my_models/\" to "
                      "pyproject.toml, or give --models-from (--builtin checks the example models)")


def _selected(rep: _Report, args, reg, lost) -> list:
    """The models named (or all), each name that is not one reported as such."""
    models = []
    broken = [t.split(":", 1)[0] for t in reg.problems]     # model files that failed to load
    for name in args.names or reg.names():
        if name in lost:
            continue
        try:
            models.append(reg.get(name))
        except KeyError as e:
            if name.endswith(".py") or os.path.exists(name):
                rep.usage_error(f"{name}: not a model name; did you mean --models-from {name}?")
            elif broken:
                rep.model_error(f"{name}: not found; {', '.join(broken)} failed to load and may define it")
            else:
                rep.usage_error(str(e))
    return models


def _train(rep: _Report, args) -> None:
    from . import train as train_command
    opts = train_command.options(rep, args)
    if not (args.models_from or args.asked or args.builtin or args.config.builtin):
        rep.usage_error(NOTHING_CONFIGURED)
    if opts is None or rep.usage:
        return
    reg, lost = _load(rep, args, args.names)
    models = _selected(rep, args, reg, lost)
    if rep.usage:
        return
    if not models:
        if not rep.problems:
            rep.usage_error("no models to train")
        return
    rep.summarize = True
    train_command.run(rep, args, models, opts)


def _check(rep: _Report, args) -> None:
    opts = _options(rep, args)
    if not (args.models_from or args.asked or args.builtin or args.config.builtin):
        rep.usage_error(NOTHING_CONFIGURED)
    if rep.usage:  # a bad option would make every run meaningless
        return
    rep.summarize = True
    import gc
    gc.disable()   # torch's import makes about a million objects: the collector would scan them again and again
    try:
        import torch

        from ..run import isolate
        from ..run import limits
        from ..run import report
        from ..run.runner import run_model
    finally:
        gc.freeze()   # ... and leaves them out of every later collection
        gc.enable()
    limits.keep_freed_memory()
    reg, lost = _load(rep, args, args.names)
    devices = []
    for dev in opts["devices"]:
        if dev == "cuda" and not torch.cuda.is_available():
            rep.usage_error("--device cuda: CUDA is not available on this machine; skipping the cuda cases")
        else:
            devices.append(dev)
    models = _selected(rep, args, reg, lost)
    dims, hyper = opts["dims"], opts["hyper"]
    unknown = [f"--dims {', '.join(k for k in dims if not any(k in m.dims for m in models))}: no selected model "
               "has such a dimension",
               f"--hyper {', '.join(k for k in hyper if not any(k in m.hyper for m in models))}: no selected model "
               "has such a hyperparameter"]
    stop = False
    for text, given, field in zip(unknown, (dims, hyper), ("dims", "hyper")):
        if models and any(not any(k in getattr(m, field) for m in models) for k in given):
            rep.usage_error(text)
            stop = True
    if stop:        # a mistyped name would run every case without it: nothing runs
        return
    if not models and not rep.problems:
        rep.usage_error("no models to check")

    plan = []
    for m in models:
        own = {k: v for k, v in dims.items() if k in m.dims}
        own_hyper = {k: v for k, v in hyper.items() if k in m.hyper}
        for dt in opts["dtypes"]:
            for dev in devices:
                refused = limits.too_large(m, own, dt or m.dtype, dev, own_hyper)
                if refused:
                    rep.usage_error(refused)
                else:
                    plan.append((m, dt or m.dtype, dev, own))
    rep.planned = len(plan)
    if not plan:
        return
    torch.set_num_threads(opts["threads"])
    table = report.Table([m.name for m, *_ in plan], [p[1] for p in plan], [p[2] for p in plan])
    rep.out.write(table.head())
    shown = not args.no_progress and rep.err.isatty()
    # off a terminal (CI), a plain line now and then instead, so that a slow model is not silence
    beat = _heartbeat() if not args.no_progress and not shown else None
    progress = _Progress(rep.err, len(plan), enabled=shown or beat is not None, heartbeat=beat,
                         goal=opts["examples"] or (_profile_examples(args.profile) if shown or beat else 0))
    rep.isolated = isolated = _isolate(args.isolate, plan, rep)
    try:
        for i, (m, dt, dev, own) in enumerate(plan):
            progress.start(i, m.name, dt, dev)
            run = (isolate.run_isolated if isolated else run_model)(
                            m, dtype=dt, device=dev, profile=args.profile, examples=opts["examples"], dims=own,
                            seed=opts["seed"], scale=opts["scale"], on_case=progress.update,
                            case_timeout=opts["case_timeout"], on_tick=progress.tick if progress.enabled else None,
                            hyper={k: v for k, v in hyper.items() if k in m.hyper})
            progress.clear()
            # a model from the project's settings is found again from any of its folders
            rep.runs.append((run, None if args.from_config else reg.asked_as(run.model)))
            rep.out.write(table.row(run))
    except KeyboardInterrupt:
        progress.clear()
        rep.interrupt()
    for run, asked in rep.runs:
        if run.verdict != "pass" or run.notes:
            rep.out.write("\n" + report.run_details(run, asked))
        elif report.aside_details(run):
            rep.out.write("\n" + report.aside_details(run))
            if args.verbose and run.failure is not None and run.failure.traceback:
                rep.out.write(run.failure.traceback)


def _parse_hyper(text: str | None) -> dict:
    from ..check.case import parse_hyper
    return parse_hyper(text)


def _init(args) -> int:
    from . import scaffold
    try:
        scaffold.render(args.kind, args.name)       # a bad NAME first, before any model file is read
        taken = _taken(args.name, args.out)
        if taken:
            raise ValueError(taken)
        path = scaffold.write(args.kind, args.name, args.out)
    except (ValueError, OSError) as e:
        print(f"gradcheck-suite: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path}; check it with:\n  gradcheck-suite check {args.name} --models-from {path}")
    return EXIT_OK


def _taken(name: str, out: str | None) -> str | None:
    """Where a model called ``name`` already exists: a built-in example (which a check that
    names a model loads alongside), an installed package's, the project's settings' models,
    or a model file in the folder ``--out`` names.  Files that do not load are left to check."""
    from ..run import registry
    from ..run.config import ConfigError, find
    try:
        cfg = find()
    except ConfigError:
        cfg = None
    targets = list(cfg.models_from) if cfg else []
    folder = out if out and (os.path.isdir(out) or out.endswith(os.sep)) else os.path.dirname(out or "")
    if folder and os.path.isdir(folder):      # a folder named with --out: never the working folder's scripts
        targets.append(folder)
    reg = registry.load(targets, root=cfg.folder if cfg else None)
    if name not in reg:
        return None
    what = "a built-in example model" if name in reg.builtin else "a model"
    return f"{what} named {name!r} already exists ({reg.origin(name)}); choose another NAME"


def _profile_examples(profile: str) -> int:
    from ..run.strategies import PROFILES
    return PROFILES[profile]["max_examples"]


#: seconds between heartbeat lines when stderr is not a terminal (GRADCHECK_SUITE_HEARTBEAT overrides)
HEARTBEAT = 30.0


def _heartbeat() -> float:
    try:
        return max(0.0, float(os.environ.get("GRADCHECK_SUITE_HEARTBEAT", HEARTBEAT)))
    except ValueError:
        return HEARTBEAT


class _Progress:
    """One line on stderr while a model runs: which model, how many cases so far, the phase
    of the running case and the time.  It is redrawn after every case and, while a case
    runs, by the waiting thread every ``rules.TICK`` seconds (see ``limits.run_case``).
    With ``heartbeat`` (stderr is not a terminal), the same facts go out as a plain line,
    at most once every ``heartbeat`` seconds, naming the model's own code that is running."""

    def __init__(self, stream: _Stream, total: int, enabled: bool, goal: int, heartbeat: float | None = None):
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
        if phase.startswith("diagnosis"):     # after the cases: the failure's kind and line
            state, phase = phase, ""
        text = ", ".join(filter(None, [f"{self.label}: {state}", phase, f"{time.monotonic() - self.t0:.1f}s"]))
        if self.heartbeat is None:
            self.stream.write("\r\x1b[K" + text[:WIDTH - 1], end="")
        elif time.monotonic() - self.last >= self.heartbeat:
            self.last = time.monotonic()
            self.stream.write(f"gradcheck-suite: still running {text}")

    def clear(self) -> None:
        if self.enabled and self.heartbeat is None:
            self.stream.write("\r\x1b[K", end="")


if __name__ == "__main__":
    sys.exit(main())
