"""``gradcheck-suite train``: the manual gradient against autograd over K optimiser steps.

The options, the text report (a line per model, then each model's message and a table of
losses at a few steps), the JSON and the plot.  The runs themselves are ``gradcheck_suite.train``'s.
"""
from __future__ import annotations

import argparse
import math
import os
import textwrap
from collections.abc import Sequence

from ..record.spec import DTYPES, TRAIN_BATCHES, TRAIN_OPTIMIZERS
from .options import SEEDS, add_common, number, parse_dims, parse_into
from ..verdict import rules
from .progress import heartbeat_interval
from .selection import NOTHING_CONFIGURED, load, selected, unconfigured


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train with the manual gradient next to autograd and say whether they part",
                       description="K optimiser steps from the same start with the manual gradient, with autograd "
                                   "in the model's dtype and with autograd in float64; the manual run parts where "
                                   "it leaves the drift two correct gradients show in this dtype.")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to train, or comma-separated NAME,NAME "
                                                             "(default: all)")
    add_common(p, "train")
    p.add_argument("--steps", metavar="K", help="optimiser steps (default: the record's train steps, else 100)")
    p.add_argument("--lr", metavar="LR", help="learning rate (default: the record's, else the SGD step that "
                                              "lowers the first loss by 5%% to first order; Adam: 1e-3)")
    p.add_argument("--optimizer", choices=TRAIN_OPTIMIZERS, default=None,
                   help="sgd, momentum (0.9) or adam (default: the record's, else sgd)")
    p.add_argument("--batch", choices=TRAIN_BATCHES, default=None,
                   help="fixed: one batch for every step; fresh: the data of seed S+s at step s "
                        "(default: the record's, else fixed)")
    p.add_argument("--dims", metavar="K=V,...", help="the sizes to train at (default: the record's train dims, "
                                                     "else the benchmark size)")
    p.add_argument("--dtype", metavar="DTYPE", help="the dtype of the manual and autograd runs (default: the model's)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu or cuda (default: cpu)")
    p.add_argument("--seed", metavar="S", help=f"the seed of the start and the data, {SEEDS[0]} to {SEEDS[1]} "
                                               "(default: 0)")
    p.add_argument("--scale", metavar="X", help="the value scale of the start and the data, as in check (default: 1)")
    p.add_argument("--out", metavar="DIR", help="write train.png there (with the plot extra) (default: no plot)")
    p.add_argument("--threads", metavar="N", default=str(rules.THREADS), help=f"torch intra-op threads (default: {rules.THREADS})")
    return p


def options(rep, args) -> dict | None:
    """The options, each mistake reported in one line; None where any is wrong."""
    opts: dict = {"steps": None, "lr": None, "seed": 0, "scale": 1.0, "dims": {}, "threads": rules.THREADS}
    parse = {
        "steps": lambda: number("--steps", args.steps),
        "lr": lambda: number("--lr", args.lr, float, 0, None, "a positive finite number", above_low=True),
        "seed": lambda: number("--seed", args.seed, int, *SEEDS, f"a whole number from {SEEDS[0]} to {SEEDS[1]}"),
        "scale": lambda: number("--scale", args.scale, float, 0, None, "a positive finite number", above_low=True),
        "dims": lambda: parse_dims(args.dims),
        "threads": lambda: number("--threads", args.threads),
    }
    ok = parse_into(rep, args, opts, parse)
    if args.dtype is not None and args.dtype not in DTYPES:
        rep.usage_error(f"--dtype {args.dtype!r} is not one of {', '.join(DTYPES)}")
        ok = False
    problem = None if args.out is None else unwritable_folder(args.out)
    if problem:   # found before the training, as --json's is, not after it
        rep.usage_error(f"--out {args.out}: {problem}")
        ok = False
    return opts if ok else None


def unwritable_folder(path: str) -> str | None:
    """Why a folder for the plot cannot be made or written at ``path``; nothing is created."""
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder"
    existing = os.path.abspath(path)
    while not os.path.exists(existing):      # the folder is made later, under the nearest one that exists
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"cannot make the folder: {existing} is a file"
    import tempfile
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return f"cannot write the plot there ({e.strerror or e})"
    return None


def run(rep, args) -> None:
    """Train the selected models: the options first, then the models, each mistake reported."""
    opts = options(rep, args)
    if unconfigured(args):
        rep.usage_error(NOTHING_CONFIGURED)
    if opts is None or rep.usage:
        return
    reg, lost = load(rep, args, args.names)
    models = selected(rep, args, reg, lost)
    if rep.usage:
        return
    if not models:
        if not rep.problems:
            rep.usage_error("no models to train")
        return
    rep.summarize = True
    _train(rep, args, models, opts)


def _train(rep, args, models: list, opts: dict) -> None:
    import torch

    from ..train import Options, train

    if args.device == "cuda" and not torch.cuda.is_available():
        rep.usage_error("--device cuda: CUDA is not available on this machine")
        return
    dims = opts["dims"]
    unknown = [k for k in dims if not any(k in m.dims for m in models)]
    if unknown:
        rep.usage_error(f"--dims {', '.join(unknown)}: no selected model has such a dimension")
        return
    torch.set_num_threads(opts["threads"])
    rep.trained = []
    rep.out.write(_HEAD)
    for m in models:
        progress = _progress(rep, m.name)
        result = train(m, Options(steps=opts["steps"], lr=opts["lr"], optimizer=args.optimizer, batch=args.batch,
                                  dims={k: v for k, v in dims.items() if k in m.dims}, dtype=args.dtype,
                                  seed=opts["seed"], device=args.device, scale=opts["scale"]), on_step=progress)
        if rep.err.isatty():
            rep.err.write("\r\x1b[K", end="")
        rep.trained.append(result)
        rep.out.write(_row(result))
    for result in rep.trained:
        rep.out.write("\n" + details(result))
    if args.out:
        _plot(rep, args.out)


def _progress(rep, name: str):
    """On a terminal, a line redrawn every ten steps; off one (CI), a plain line at most every
    30 s (``GRADCHECK_SUITE_HEARTBEAT``), so that a long training is not silence."""
    import time

    tty = rep.err.isatty()
    every = None if tty else heartbeat_interval()
    began, last = time.monotonic(), [time.monotonic()]

    def show(step: int, total: int) -> None:
        now = time.monotonic()
        if tty and (step == 1 or step == total or step % 10 == 0):
            rep.err.write(f"\r\x1b[K{name}: step {step}/{total}", end="")
        elif not tty and now - last[0] >= every and step < total:
            last[0] = now
            rep.err.write(f"gradcheck-suite: still training {name}: step {step}/{total}, {now - began:.1f}s")
    return show


_HEAD = f"{'model':<22} {'dtype':<8} {'steps':>5} {'lr':>9}  {'verdict':<16} step"


def _row(r) -> str:
    lr = "-" if r.lr is None else f"{r.lr:.3g}"
    at = r.parted_at if r.verdict == "manual diverges" else r.diverged_at if r.verdict == "both diverge" else None
    return f"{r.name:<22} {r.dtype:<8} {r.steps:>5} {lr:>9}  {r.verdict:<16} {'' if at is None else at}"


def details(r) -> str:
    """The message, the notes and the losses at a few steps, as text."""
    lines = [textwrap.fill(r.message, rules.WIDTH, subsequent_indent="  ")]
    lines += [textwrap.fill(f"note: {n}", rules.WIDTH, initial_indent="  ", subsequent_indent="    ") for n in r.notes]
    if r.verdict == "error" or not r.losses["manual"]:
        return "\n".join(lines)
    lines.append(textwrap.fill(f"envelope: {r.envelope_from}", rules.WIDTH, initial_indent="  ", subsequent_indent="    "))
    lines.append(f"  {'step':>6} {'manual':>12} {'autograd':>12} {'float64':>12} {'apart':>9} {'envelope':>9}")
    for s in shown_steps(len(r.losses["manual"]), (r.parted_at, r.diverged_at)):
        cells = [_cell(r.losses[k][s - 1]) for k in ("manual", "autograd", "float64")]
        lines.append(f"  {s:>6} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12} "
                     f"{_cell(r.distance[s - 1], 2):>9} {_cell(r.envelope[s - 1], 2):>9}")
    return "\n".join(lines)


def _cell(v, digits: int = 6) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def shown_steps(last: int, marks: Sequence[int | None]) -> list[int]:
    """1, 2, 5, 10, 20, 50 ... up to ``last``, with ``last`` and the marked steps."""
    steps, k = {1, last}, 1
    while k <= last:
        for f in (1, 2, 5):
            if f * k <= last:
                steps.add(f * k)
        k *= 10
    steps.update(s for s in marks if s is not None and 1 <= s <= last)
    return sorted(steps)


def _plot(rep, out: str) -> None:
    try:
        import matplotlib
    except ImportError:
        rep.err.write("gradcheck-suite: plot skipped: matplotlib is not installed "
                      "(pip install 'gradcheck-suite[plot]'); the table and the JSON have the same figures")
        return
    matplotlib.use("Agg")
    from ..train.plot import plot
    try:
        os.makedirs(out, exist_ok=True)
        path = plot([r for r in rep.trained if r.losses["manual"]], os.path.join(out, "train.png"))
    except OSError as e:
        rep.usage_error(f"--out {out}: cannot write the plot there ({e.strerror or e})")
        return
    if path is not None:
        for r in rep.trained:
            r.plot = path if r.losses["manual"] else None
        rep.out.write(f"\nplot: {path}")


def train_exit(results: list) -> bool:
    """Whether every model trained like autograd."""
    return all(r.verdict == "same" for r in results)

