"""``gradcheck-suite bench``: run the benchmark suite under pytest-benchmark and write the report.

Exit codes: 0 done, 1 a benchmark failed or (with ``--fail-on-regression``) a row is
slower than the baseline beyond the threshold or keeps or peaks at more bytes, 2 bad
input (one line, no traceback).

The models are the project's: ``--models-from``, else ``models-from`` of
``[tool.gradcheck-suite]`` in its pyproject.toml; the built-in examples only with
``--builtin``, ``builtin = true`` in the settings, or a model named (``NAME ...`` or ``--models``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..bench import regression
from ..bench import verdicts
from ..bench.markdown import REPORT_NAME, report
from ..bench.rows import JSON_NAME, BenchInputError, load_run, rows
from .options import model_names
from ..verdict import rules

SUITE = Path(__file__).resolve().parent.parent / "bench" / "suite"
PROG = "gradcheck-suite bench"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):   # no abbreviations: --models is never --models-from
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, exit 2 (argparse would print the usage first)
        raise BenchInputError(message)


def _threshold(text: str) -> float:
    try:
        return regression.threshold(text)
    except ValueError as e:
        # argparse names the option itself: "argument --threshold: 'nan' must be ..."
        raise argparse.ArgumentTypeError(str(e).removeprefix("--threshold ")) from None


NOTHING_CONFIGURED = ("no models configured: add [tool.gradcheck-suite] models-from = \"my_models/\" to "
                      "pyproject.toml, or give --models-from (--builtin benchmarks the example models)")


def _memory_threshold(text: str) -> float:
    try:
        return regression.threshold(text, "--memory-threshold")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--memory-threshold ")) from None


def _positive(numeric):
    """An argparse type: a finite number (a ``numeric``, int or float) above 0."""
    def parse(text: str):
        try:
            value = numeric(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if numeric is int else ''}number") from None
        if not 0 < value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a positive finite number")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    quick_budget, full_budget = rules.BENCH_BUDGETS[True][0], rules.BENCH_BUDGETS[False][0]
    ap = _Parser(
        prog=PROG,
        description="Check every registered model, then time its hand-written backward against autograd in "
                    "interleaved rounds (pytest-benchmark underneath), and write benchmarks.json, report.md and "
                    "sweep.png into --out.",
        epilog="Arguments after '--' go to pytest and pytest-benchmark (e.g. -- -k mlp_relu --benchmark-save=x). "
               "Exit codes: 0 done, 1 a benchmark failed or a regression with --fail-on-regression, 2 bad input.")
    ap.add_argument("names", nargs="*", metavar="NAME", help="models to benchmark, or comma-separated NAME,NAME "
                                                              "(default: the settings' models, else all of the project's)")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for the report (created if missing)")
    ap.add_argument("--quick", action="store_true",
                    help=f"short CI pass: CPU float32 only, {quick_budget:g} s per row, no size sweep (default: full grid "
                         f"and sweep, {full_budget:g} s per row)")
    ap.add_argument("--models-from", action="append", default=[], metavar="PATH",
                    help="benchmark the models of this file, folder or module; repeatable (default: the settings' "
                         "models-from in [tool.gradcheck-suite] of pyproject.toml)")
    ap.add_argument("--models", action="append", default=[], metavar="NAME[,NAME...]",
                    help="models to benchmark, the same as NAME ...: comma-separated, repeatable "
                         "(default: the settings' models, else all of the project's)")
    ap.add_argument("--builtin", action="store_true",
                    help="also the built-in example models (default: only where the settings say builtin = true, "
                         "or a model is named)")
    ap.add_argument("--threads", type=_positive(int), default=1, metavar="N",
                    help="torch intra-op threads while timing (default: 1; with more, torch stalls whenever "
                         "another process takes a core)")
    ap.add_argument("--world-size", type=_positive(int), metavar="N",
                    help="run sharded records (sharded_model) on N ranks (default: each record's largest world size)")
    ap.add_argument("--max-time", type=_positive(float), metavar="SECONDS",
                    help=f"time per row (default: {quick_budget:g} with --quick, else {full_budget:g})")
    ap.add_argument("--baseline", metavar="FILE", help="a previous run's benchmarks.json to compare against")
    ap.add_argument("--threshold", type=_threshold, default=rules.DEFAULT_THRESHOLD, metavar="PCT",
                    help="a row is a regression when the confidence interval of its manual/autograd ratio "
                         f"change lies wholly above +PCT%% (default: {rules.DEFAULT_THRESHOLD:g})")
    ap.add_argument("--memory-threshold", type=_memory_threshold, default=rules.DEFAULT_MEMORY_THRESHOLD,
                    metavar="PCT", help="a row is a memory regression when the manual path's kept or peak bytes grew "
                                        f"by more than PCT%% (default: {rules.DEFAULT_MEMORY_THRESHOLD:g}: any growth)")
    ap.add_argument("--fail-on-regression", action="store_true",
                    help="exit 1 when a row regressed in time or memory (default: off)")
    ap.add_argument("--check-json", metavar="FILE",
                    help="take check verdicts from this `gradcheck-suite check --json` report "
                         "(default: a quick check of each model before timing it)")
    ap.add_argument("--from-json", metavar="FILE", help="do not run: write the report from this benchmarks.json")
    ap.add_argument("--no-plots", action="store_true", help="do not draw the sweep plot")
    return ap


def _writable(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise BenchInputError(f"cannot write to the output folder {path}: {e.strerror or e}") from None
    return out


def pytest_args(json_path: Path, *, quick: bool, threads: int, max_time: float | None = None,
                world_size: int | None = None,
                models_from: Iterable[str] = (), models: str | None = None, check_json: str | None = None,
                builtin: bool = True, root: str | None = None, baseline: str | None = None,
                threshold: float = rules.DEFAULT_THRESHOLD, extra: Iterable[str] = ()) -> list[str]:
    """The pytest command line that runs the suite inside the installed package."""
    args = [str(SUITE), "-p", "gradcheck_suite.bench.hooks", f"--rootdir={SUITE}", "-p", "no:cacheprovider",
            "--assert=plain", "-q", "--benchmark-quiet", f"--benchmark-json={json_path}", f"--bench-threads={threads}",
            # gradcheck_suite is a pytest plugin too, already imported by this command
            "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    if quick:
        args.append("--bench-quick")
    if max_time is not None:
        args.append(f"--bench-budget={max_time}")
    if world_size is not None:
        args.append(f"--bench-world-size={world_size}")
    for m in models_from:
        args += ["--bench-models-from", m]
    if models:
        args += ["--bench-models", models]
    if check_json:
        args += ["--bench-check-json", check_json]
    if builtin:
        args.append("--bench-builtin")
    if root:
        args.append(f"--bench-root={root}")
    if baseline:
        args += ["--bench-baseline", str(Path(baseline).resolve()), f"--bench-threshold={threshold}"]
    return args + list(extra)


def _check_models(models_from: list[str], names: str | None, builtin: bool = True,
                  root: str | None = None) -> list[str]:
    """Model files that do not exist and unknown names are usage errors, before anything
    runs; the problems of model files that exist but are broken are returned."""
    from ..run.registry import load

    reg = load(models_from, builtin=builtin, root=root)
    if reg.not_found:
        raise BenchInputError(reg.not_found[0])
    for name in (names or "").split(","):
        if name.strip() and name.strip() not in reg:
            try:
                reg.get(name.strip())
            except KeyError as e:
                raise BenchInputError(str(e)) from None
    return reg.problems


def step_summary(text: str) -> Path | None:
    """Append the report to GitHub's job summary when ``GITHUB_STEP_SUMMARY`` names a file."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    try:
        with open(target, "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    except OSError as e:
        print(f"{PROG}: warning: cannot append to GITHUB_STEP_SUMMARY {target}: {e.strerror or e}", file=sys.stderr)
        return None
    return Path(target)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    try:
        args = _parser().parse_intermixed_args(argv)
        baseline = load_run(args.baseline, "baseline file") if args.baseline else None
        if baseline is not None and not rows(baseline):
            raise BenchInputError(f"baseline file {args.baseline} has no paired manual/autograd rows "
                                  "(written by another tool or an older gradcheck-suite); rerun the baseline")
        given = load_run(args.from_json, "--from-json file") if args.from_json else None
        if args.check_json:
            verdicts.from_check_json(args.check_json)
        cfg = _settings(args)
        out = _writable(args.out)
    except (BenchInputError, verdicts.CheckFileError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    failed = False
    if given is not None:
        run = given
    else:
        try:
            import pytest
            import pytest_benchmark  # noqa: F401  (the plugin the suite runs under)
        except ImportError as e:
            print(f"{PROG}: error: {e.name} is not installed; install the test extra: "
                  "pip install 'gradcheck-suite[test]'", file=sys.stderr)
            return 2
        try:
            if not (args.models_from or args.builtin):
                raise BenchInputError(NOTHING_CONFIGURED)
            problems = _check_models(args.models_from, args.models, args.builtin, cfg.folder)
        except BenchInputError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
        for text in problems:   # the other models are still benchmarked; the run fails
            print(f"{PROG}: model error: {text}", file=sys.stderr)
        json_path = out / JSON_NAME
        json_path.unlink(missing_ok=True)
        code = pytest.main(pytest_args(json_path, quick=args.quick, threads=args.threads, max_time=args.max_time,
                                       world_size=args.world_size,
                                       models_from=args.models_from, models=args.models, check_json=args.check_json,
                                       builtin=args.builtin, root=cfg.folder, baseline=args.baseline,
                                       threshold=args.threshold, extra=extra))
        if not json_path.is_file():
            print(f"{PROG}: the benchmarks did not run (pytest exit code {int(code)})", file=sys.stderr)
            return 1
        failed = code != 0 or bool(problems)
        run = load_run(json_path)

    text, regressed = report(run, out, baseline, args.threshold, plots=not args.no_plots,
                             memory_threshold_pct=args.memory_threshold)
    (out / REPORT_NAME).write_text(text, encoding="utf-8")
    print(text)
    print(f"Report written to {out / REPORT_NAME}")
    summary = step_summary(text)
    if summary is not None:
        print(f"Report appended to the step summary {summary}")
    if failed:
        print(f"{PROG}: some benchmarks or model files failed; see the messages above", file=sys.stderr)
        return 1
    if regressed and args.fail_on_regression:
        if regressed.slower:
            names = ", ".join(f"{c.row.model} {c.row.phase}" for c in regressed.slower)
            print(f"{PROG}: {len(regressed.slower)} regression(s) beyond {args.threshold:g}%: {names}", file=sys.stderr)
        if regressed.memory:
            names = ", ".join(f"{c.row.model} ({', '.join(c.describe(w) for w in c.grew)})" for c in regressed.memory)
            print(f"{PROG}: {len(regressed.memory)} memory regression(s) beyond {args.memory_threshold:g}%: {names}",
                  file=sys.stderr)
        return 1
    return 0


def _settings(args):
    """The project's ``[tool.gradcheck-suite]`` under what the command line leaves open:
    its model files, its models, and whether the built-in examples come along."""
    from ..run.config import ConfigError, find

    try:
        cfg = find()
    except ConfigError as e:
        raise BenchInputError(str(e)) from None
    args.models = ",".join(model_names(args.names, args.models)) or None    # NAME ..., --models: one list
    named = bool(args.models)
    if not args.models_from:
        args.models_from = list(cfg.models_from)
    if not args.models and cfg.models:
        args.models = ",".join(cfg.models)
    # the built-in models are examples: benchmarked when asked for, by the option, the settings or a name
    args.builtin = args.builtin or cfg.builtin is True or named
    return cfg
