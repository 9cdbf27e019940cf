"""gradcheck-suite list | check | bench.

Exit codes: 0 every model passed, 1 a model failed or errored, 2 a usage error (an
unknown model, bad --dims, a missing file, CUDA asked for but absent).  Usage errors
are reported and the rest still runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gradcheck-suite",
        description="Check hand-written backward passes against autograd and finite differences.",
        epilog="Exit codes: 0 all pass, 1 a model fails or errors, 2 usage error.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{list,check,bench,init}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--models-from", action="append", default=[], metavar="PATH",
                       help="a model file, a folder of them, or a dotted module name; repeatable (default: none)")
        p.add_argument("--json", metavar="FILE", help="also write a JSON report to FILE ('-' for stdout)")
        p.add_argument("--verbose", "-v", action="store_true", help="show tracebacks from model code")

    p = sub.add_parser("list", help="list the registered models")
    common(p)

    p = sub.add_parser("check", help="check models' backward passes on generated cases")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: all)")
    common(p)
    p.add_argument("--dims", metavar="K=V,...", help="fix dimensions, e.g. N=64,D_in=1000 (may exceed the generated ranges)")
    p.add_argument("--hyper", metavar="K=V,...", help="fix hyperparameters, e.g. stride=2,bias=True (default: drawn)")
    p.add_argument("--dtype", metavar="DTYPE[,DTYPE]", help="float64, float32, ... (default: each model's own)")
    p.add_argument("--device", default="cpu", metavar="DEVICE[,DEVICE]", help="cpu, cuda or both, comma-separated (default: cpu)")
    p.add_argument("--examples", type=int, metavar="N", help="generated cases per model (default: the profile's, 20 for quick)")
    p.add_argument("--seed", type=int, metavar="S", help="fix the seed of the case's values (default: drawn)")
    p.add_argument("--scale", type=float, metavar="X", help="fix the value scale (default: drawn from 1e-3 to 1e3)")
    p.add_argument("--profile", default="quick", choices=["quick", "nightly"], help="hypothesis profile (default: quick)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown on a terminal)")

    sub.add_parser("bench", help="time manual backward against autograd and write a report "
                                 "(gradcheck-suite bench --help)")

    from .scaffold import KINDS
    p = sub.add_parser("init", help="write a starting model file that passes the check")
    p.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of {', '.join(KINDS)}")
    p.add_argument("name", metavar="NAME", help="the model's name; the file is NAME.py")
    p.add_argument("--out", metavar="PATH", help="where to write the file (default: NAME.py here)")
    return ap


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # e.g. `gradcheck-suite list | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        _say("gradcheck-suite: interrupted")
        return 130


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its options are its own: hand them over unparsed
        from . import bench
        return bench.main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "init":
        return _init(args)
    from . import registry
    reg = registry.load(args.models_from)
    if args.command == "list":
        return _list(reg, args)
    return _check(reg, args)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


def _load_problems(reg, args) -> int:
    for text in reg.not_found:
        _say(f"gradcheck-suite: error: {text}")
    for text in reg.problems:
        _say(f"gradcheck-suite: model error: {text}")
        if args.verbose and text in reg.tracebacks:
            _say(reg.tracebacks[text])
    return EXIT_USAGE if reg.not_found else (EXIT_FAILED if reg.problems else EXIT_OK)


def _list(reg, args) -> int:
    code = _load_problems(reg, args)
    rows = []
    for m in reg:
        dims = ", ".join(f"{k}∈[{d.low},{d.high}] bench {d.bench}" for k, d in m.dims.items())
        tensors = ", ".join(m.differentiable)
        rows.append({"name": m.name, "dtype": m.dtype, "dims": {k: vars(d) for k, d in m.dims.items()},
                     "differentiable": list(m.differentiable), "origin": reg.origin(m.name),
                     "doc": (m.doc or "").strip().splitlines()[0] if m.doc else ""})
        print(f"{m.name:<20} {m.dtype:<8} grads: {tensors}\n{'':<20} dims: {dims}")
        if rows[-1]["doc"]:
            print(f"{'':<20} {rows[-1]['doc']}")
    _write_json(args.json, {"version": 1, "models": rows, "problems": reg.problems + reg.not_found})
    return code


def _parse_dims(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    dims = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--dims: {part!r} is not K=V (e.g. --dims N=64,D_in=1000)")
        try:
            size = int(value)
        except ValueError:
            raise ValueError(f"--dims: {key}={value!r} is not a whole number") from None
        if size < 1:
            raise ValueError(f"--dims: {key}={size} must be at least 1")
        dims[key] = size
    return dims


def _check(reg, args) -> int:
    import torch

    from . import report
    from .runner import run_model
    from .spec import DTYPES

    usage = _load_problems(reg, args) == EXIT_USAGE
    failed = bool(reg.problems)
    from .case import parse_hyper
    try:
        dims = _parse_dims(args.dims)
        hyper = parse_hyper(args.hyper)
    except ValueError as e:
        _say(f"gradcheck-suite: error: {e}")
        return EXIT_USAGE
    if args.examples is not None and args.examples < 1:
        _say(f"gradcheck-suite: error: --examples={args.examples} must be at least 1")
        return EXIT_USAGE
    if args.scale is not None and not args.scale > 0:
        _say(f"gradcheck-suite: error: --scale={args.scale} must be positive")
        return EXIT_USAGE
    dtypes = args.dtype.split(",") if args.dtype else [None]
    for dt in dtypes:
        if dt is not None and dt not in DTYPES:
            _say(f"gradcheck-suite: error: --dtype {dt!r} is not one of {', '.join(DTYPES)}")
            return EXIT_USAGE
    devices = []
    for dev in args.device.split(","):
        if dev not in ("cpu", "cuda"):
            _say(f"gradcheck-suite: error: --device {dev!r}: use cpu, cuda or cpu,cuda")
            return EXIT_USAGE
        if dev == "cuda" and not torch.cuda.is_available():
            _say("gradcheck-suite: error: --device cuda: CUDA is not available on this machine; skipping the cuda cases")
            usage = True
            continue
        devices.append(dev)

    models = []
    for name in args.names or reg.names():
        try:
            models.append(reg.get(name))
        except KeyError as e:
            _say(f"gradcheck-suite: error: {e}")
            usage = True
    if dims:
        unused = [k for k in dims if not any(k in m.dims for m in models)]
        if unused:
            _say(f"gradcheck-suite: error: --dims {', '.join(unused)}: no selected model has such a dimension")
            usage = True
    if hyper:
        unused = [k for k in hyper if not any(k in m.hyper for m in models)]
        if unused:
            _say(f"gradcheck-suite: error: --hyper {', '.join(unused)}: no selected model has such a hyperparameter")
            usage = True
    if not models and not reg.problems:
        _say("gradcheck-suite: error: no models to check")

    plan = [(m, dt, dev) for m in models for dt in dtypes for dev in devices]
    progress = _Progress(len(plan), enabled=not args.no_progress and sys.stderr.isatty())
    runs = []
    for i, (m, dt, dev) in enumerate(plan):
        own = {k: v for k, v in dims.items() if k in m.dims}
        progress.start(i, m.name, dt or m.dtype, dev, args.examples)
        run = run_model(m, dtype=dt, device=dev, profile=args.profile, examples=args.examples, dims=own,
                        seed=args.seed, scale=args.scale, on_case=progress.update,
                        hyper={k: v for k, v in hyper.items() if k in m.hyper})
        progress.clear()
        runs.append(run)
    if runs:
        print(report.table(runs))
    for run in runs:
        if run.verdict != "pass":
            failed = True
            print()
            print(report.run_details(run, reg.asked_as(run.model)))
            if args.verbose and run.failure is not None and run.failure.traceback:
                print(run.failure.traceback)
    code = EXIT_USAGE if usage else (EXIT_FAILED if failed else EXIT_OK)
    passed = sum(r.verdict == "pass" for r in runs)
    print(f"\n{passed} passed, {len(runs) - passed} failed")
    _write_json(args.json, {
        "version": report.JSON_VERSION,
        "torch": torch.__version__,
        "exit_code": code,
        "models": [report.run_json(r, reg.asked_as(r.model)) for r in runs],
        "problems": reg.not_found + reg.problems,
    })
    return code


def _init(args) -> int:
    from . import scaffold
    try:
        path = scaffold.write(args.kind, args.name, args.out)
    except (ValueError, OSError) as e:
        _say(f"gradcheck-suite: error: {e}")
        return EXIT_USAGE
    print(f"wrote {path}; check it with:\n  gradcheck-suite check {args.name} --models-from {path}")
    return EXIT_OK


def _write_json(path: str | None, doc: dict) -> None:
    if not path:
        return
    text = json.dumps(doc, indent=2)
    if path == "-":
        print(text)
        return
    try:
        with open(path, "w") as f:
            f.write(text + "\n")
    except OSError as e:
        _say(f"gradcheck-suite: error: cannot write the JSON report: {e}")


class _Progress:
    """One line on stderr that redraws itself: which model, how many cases so far."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.label, self.goal, self.t0 = "", None, 0.0

    def start(self, i: int, name: str, dtype: str, device: str, examples: int | None) -> None:
        self.label = f"[{i + 1}/{self.total}] {name} {dtype} {device}"
        self.goal, self.t0 = examples, time.perf_counter()
        self._draw(0)

    def update(self, run) -> None:
        self._draw(run.checked + run.nondiff + run.skipped + run.shrink_steps, shrinking=run.failure is not None)

    def _draw(self, done: int, shrinking: bool = False) -> None:
        if not self.enabled:
            return
        goal = self.goal or 20
        width = 24
        filled = min(width, width * done // goal)
        bar = "#" * filled + "-" * (width - filled)
        state = "shrinking" if shrinking else f"{done}/{goal} cases"
        sys.stderr.write(f"\r\x1b[K{self.label} [{bar}] {state} {time.perf_counter() - self.t0:.1f}s")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
