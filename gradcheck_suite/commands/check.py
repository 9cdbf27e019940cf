"""``gradcheck-suite check``: each selected model's backward on generated cases, a table row
per model, and the details of every model that did not pass."""
from __future__ import annotations

import argparse

from ..kinds.sharded import WORLD_SIZE
from ..record.spec import foreign_dtype
from .options import SEEDS, add_common, case_timeout, number, parse_dims, parse_into, shard
from ..verdict import rules
from .progress import Progress, heartbeat_interval
from .selection import NOTHING_CONFIGURED, load, selected, unconfigured


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("check", help="check models' backward passes on generated cases")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to check, or comma-separated NAME,NAME "
                                                             "(default: all)")
    add_common(p)
    p.add_argument("--dims", metavar="K=V,...", help="fix dimensions, e.g. N=64,D_in=1000 (may exceed the generated ranges)")
    p.add_argument("--hyper", metavar="K=V,...", help="fix hyperparameters, e.g. stride=2,bias=True (default: drawn)")
    p.add_argument("--world-size", metavar="N", help="run sharded records on N ranks (default: drawn from each "
                                                     "record's world_sizes)")
    p.add_argument("--collective-timeout", metavar="SECONDS",
                   help="seconds a sharded record's rank waits in one collective for the other ranks, over each "
                        f"record's collective_timeout (default: the record's, else {rules.SHARDED_TIMEOUT:g})")
    p.add_argument("--dtype", metavar="DTYPE[,DTYPE]",
                   help="float64, float32, float16, bfloat16, complex64, complex128 (default: each model's own)")
    p.add_argument("--device", default="cpu", metavar="DEVICE[,DEVICE]", help="cpu, cuda or both, comma-separated (default: cpu)")
    p.add_argument("--examples", metavar="N", help="generated cases per model (default: the profile's, 20 for quick)")
    p.add_argument("--seed", metavar="S", help=f"fix the seed of the case's values, {SEEDS[0]} to {SEEDS[1]} (default: drawn)")
    p.add_argument("--scale", metavar="X", help="fix the value scale (default: drawn from 1e-3 to 1e3)")
    p.add_argument("--case-timeout", metavar="SECONDS", default=str(rules.CASE_TIMEOUT),
                   help=f"a case running longer is abandoned as an error; 0 for no limit (default: {rules.CASE_TIMEOUT:g})")
    p.add_argument("--profile", default=None, choices=["quick", "nightly"],
                   help="hypothesis profile (default: the project's, else quick)")
    p.add_argument("--compile", nargs="?", const=rules.COMPILE_BACKEND, default=None, metavar="BACKEND",
                   choices=rules.COMPILE_BACKENDS,
                   help=f"also check each case under torch.compile with this backend ({', '.join(rules.COMPILE_BACKENDS)}; "
                        f"alone: {rules.COMPILE_BACKEND}): its output and manual gradient against eager's, about 1 s a "
                        "case with aot_eager; a record's compile=False opts out (default: off, on in the nightly "
                        "profile)")
    p.add_argument("--compile-fullgraph", action="store_true",
                   help="where a case runs under torch.compile, a graph break is an error naming its reason, as "
                        "torch.compile(fullgraph=True) refuses it (default: off, a graph break is a note)")
    p.add_argument("--order", metavar="N",
                   help="the highest derivative checked, for every selected model, over its record's order: 2 is "
                        "double backward, 3 the third derivative, ... (default: each record's own, 1)")
    p.add_argument("--threads", metavar="N", default=str(rules.THREADS),
                   help=f"torch intra-op threads for the checks; more cores are better used by running "
                        f"models in parallel (pytest -n auto) (default: {rules.THREADS})")
    p.add_argument("--no-progress", action="store_true", help="no progress line (default: shown on a terminal)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each model in a child process: one that crashes the process (a segfault, os._exit, "
                        "out of memory) is its own error, and the others run (default: on when every run is on "
                        "the CPU, where it costs a fork a model: tens of milliseconds, see docs/cli.md)")
    p.add_argument("--shard", metavar="K/N",
                   help="run only the K-th of N parts of the selected models, for N machines of a CI matrix: the "
                        "same parts on every machine, balanced by an estimate of each model's cost; the JSON "
                        "report records the part, and 'gradcheck-suite merge' joins the N reports (default: all)")
    return p


def options(rep, args) -> dict:
    """The check's options, validated up front; every mistake is reported, not just the first."""
    from ..record.spec import DTYPES

    opts = {"dims": {}, "hyper": {}, "examples": None, "seed": None, "scale": None, "case_timeout": None,
            "threads": rules.THREADS, "order": None, "shard": None}
    parse = {
        "dims": lambda: parse_dims(args.dims),
        "hyper": lambda: _parse_hyper(args.hyper),
        "threads": lambda: number("--threads", args.threads),
        "examples": lambda: number("--examples", args.examples),
        "order": lambda: number("--order", args.order, int, 1, None, "a whole number of at least 1 (1: the gradient, "
                                "2: double backward, 3: the third derivative, ...)"),
        "seed": lambda: number("--seed", args.seed, int, *SEEDS, f"a whole number from {SEEDS[0]} to {SEEDS[1]}"),
        "scale": lambda: number("--scale", args.scale, float, 0, None, "a positive finite number", above_low=True),
        "case_timeout": lambda: case_timeout("--case-timeout", args.case_timeout),
        "shard": lambda: shard("--shard", args.shard),
        "collective_timeout": lambda: number("--collective-timeout", args.collective_timeout, float, 0, None,
                                             "a positive number of seconds", above_low=True),
        WORLD_SIZE: lambda: number("--world-size", args.world_size),
    }
    parse_into(rep, args, opts, parse)
    if opts.pop(WORLD_SIZE, None) is not None:    # a sharded record's world size: one of its hyperparameters
        opts["hyper"][WORLD_SIZE] = number("--world-size", args.world_size)
    opts["dtypes"] = args.dtype.split(",") if args.dtype else [None]
    for dt in opts["dtypes"]:
        if dt is not None and dt not in DTYPES:
            rep.usage_error(f"--dtype {dt!r} is not one of {', '.join(DTYPES)}")
    opts["devices"] = args.device.split(",")
    for dev in opts["devices"]:
        if dev not in ("cpu", "cuda"):
            rep.usage_error(f"--device {dev!r}: use cpu, cuda or cpu,cuda")
    return opts


def run(rep, args) -> None:
    """Check the selected models, one table row each, then the details of every model that
    did not pass or has notes."""
    opts = options(rep, args)
    if unconfigured(args):
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
    if opts.get("collective_timeout") is not None:
        from ..kinds import ranks
        ranks.TIMEOUT_OVERRIDE = opts["collective_timeout"]   # the --isolate children fork with it
    reg, lost = load(rep, args, args.names)
    devices = []
    for dev in opts["devices"]:
        if dev == "cuda" and not torch.cuda.is_available():
            rep.usage_error("--device cuda: CUDA is not available on this machine; skipping the cuda cases")
        else:
            devices.append(dev)
    models = selected(rep, args, reg, lost)
    dims, hyper = opts["dims"], opts["hyper"]
    unknown = [f"--dims {', '.join(k for k in dims if not any(k in m.dims for m in models))}: no selected model "
               "has such a dimension",
               f"--hyper {', '.join(k for k in hyper if not any(k in m.hyper for m in models))}: no selected model "
               "has such a hyperparameter"]
    if WORLD_SIZE in hyper and models and not any(WORLD_SIZE in m.hyper for m in models):
        unknown[1] = "--world-size: no selected model is sharded (sharded_model)"
    stop = False
    for text, given, field in zip(unknown, (dims, hyper), ("dims", "hyper")):
        if models and any(not any(k in getattr(m, field) for m in models) for k in given):
            rep.usage_error(text)
            stop = True
    if stop:        # a mistyped name would run every case without it: nothing runs
        return
    if not models and not rep.problems:
        rep.usage_error("no models to check")
    if opts["shard"] is not None:
        models = _part(rep, args, opts, models)
        if not models:
            return

    plan, foreign = [], []
    for m in models:
        own = {k: v for k, v in dims.items() if k in m.dims}
        own_hyper = {k: v for k, v in hyper.items() if k in m.hyper}
        for dt in opts["dtypes"]:
            if dt is not None and foreign_dtype(m.dtype, dt):
                foreign.append((m.name, dt))
                continue
            for dev in devices:
                refused = limits.too_large(m, own, dt or m.dtype, dev, own_hyper)
                if refused:
                    rep.usage_error(refused)
                else:
                    plan.append((m, dt or m.dtype, dev, own))
    rep.planned = len(plan)
    for dt in dict.fromkeys(dt for _, dt in foreign):
        names = [n for n, d in foreign if d == dt]
        rep.out.write(f"{dt}: {len(names)} record{'s' * (len(names) > 1)} written for real numbers not checked "
                      f"({', '.join(names[:6])}{', ...' * (len(names) > 6)}); a record gives dtype={dt!r} to be "
                      "checked in complex\n")
    if not plan:
        return
    torch.set_num_threads(opts["threads"])
    table = report.Table([m.name for m, *_ in plan], [p[1] for p in plan], [p[2] for p in plan],
                         sharded=any(m.sharded is not None for m, *_ in plan))
    rep.out.write(table.head())
    shown = not args.no_progress and rep.err.isatty()
    # off a terminal (CI), a plain line now and then instead, so that a slow model is not silence
    beat = heartbeat_interval() if not args.no_progress and not shown else None
    progress = Progress(rep.err, len(plan), enabled=shown or beat is not None, heartbeat=beat,
                        goal=opts["examples"] or (_profile_examples(args.profile) if shown or beat else 0))
    rep.isolated = isolated = _isolate(args.isolate, plan, rep)
    if isolated and any(m.sharded is not None for m, *_ in plan):
        from ..kinds import ranks
        ranks.prestart()    # the ranks' zygote, shared by every model's child process
    try:
        for i, (m, dt, dev, own) in enumerate(plan):
            progress.start(i, m.name, dt, dev)
            run = (isolate.run_isolated if isolated else run_model)(
                            m, dtype=dt, device=dev, profile=args.profile, examples=opts["examples"], dims=own,
                            seed=opts["seed"], scale=opts["scale"], on_case=progress.update,
                            case_timeout=opts["case_timeout"], on_tick=progress.tick if progress.enabled else None,
                            hyper={k: v for k, v in hyper.items() if k in m.hyper}, compile=args.compile,
                            order=opts["order"], fullgraph=args.compile_fullgraph)
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


def _part(rep, args, opts: dict, models: list) -> list:
    """The part of ``models`` that ``--shard K/N`` runs, with the part and the selection it
    was cut from in the JSON report, for ``gradcheck-suite merge`` to check that the N reports
    are one run."""
    from ..run.shard import part
    k, n = opts["shard"]
    mine = part(models, k, n)
    rep.fields["shard"] = {
        "part": k, "of": n, "selection": [m.name for m in models], "models": [m.name for m in mine],
        "profile": args.profile,
        # which of the problems are a model file's (exit 1), for merge's summary: all come from loading, before this
        "model_errors": list(rep.model_problems),
        "options": {"dtype": args.dtype, "device": args.device, "examples": opts["examples"], "seed": opts["seed"],
                    "scale": opts["scale"], "dims": opts["dims"], "hyper": args.hyper, "compile": args.compile}}
    if models:
        rep.out.write(f"shard {k}/{n}: {len(mine)} of the {len(models)} selected model{'s' * (len(models) != 1)}"
                      + ("" if mine else "; nothing to check in this part") + "\n")
    return mine


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


def _parse_hyper(text: str | None) -> dict:
    """``--hyper K=V,...`` as the case reads it (the case module loads torch: only when given)."""
    from ..check.case import parse_hyper
    return parse_hyper(text)


def _profile_examples(profile: str) -> int:
    from ..run.strategies import PROFILES
    return PROFILES[profile]["max_examples"]
