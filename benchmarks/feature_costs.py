"""What three parts of a check cost, each against the same run without it, interleaved:

    python benchmarks/feature_costs.py [--rounds 5]

- layouts: the 20-case check of ``mlp_relu`` at its seed size (64x1000->100->10, float64),
  in process, with and without the rerun in training layouts (the ``layouts`` stage of
  ``check.pipeline.STAGES``);
- diagnosis: the run of a wrong backward (``mlp_no_mask`` of ``examples/wrong.py``) at the
  seed size, failure and report included, with and without ``runner._diagnose``;
- isolate: ``gradcheck-suite check --no-progress`` over the 9 built-in models (20 cases
  each) and ``check mlp_relu`` at the seed size, whole processes, with and without ``--isolate``.

Each prints the medians, the ratio, the torch threads (1) and the load before and after.

    python benchmarks/feature_costs.py --stage NAME [--models-from FILE --model MODEL] [--rounds 5]

measures one stage of ``check.pipeline.STAGES`` alone: 20 cases of the model at its benchmark
size (default: ``legendre_p3`` of ``examples/legendre_p3.py``, an ``autograd.Function``), with
and without that stage, in process, interleaved.

    python benchmarks/feature_costs.py --orders 1,2,3 [--models-from FILE --model MODEL] [--rounds 5]

measures the higher orders: the same 20 cases at each order (``Case.order``, as ``check --order``),
in process, interleaved, each against the first order given.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_DIMS = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}
CLI = [os.path.join(os.path.dirname(sys.executable), "gradcheck-suite")]


def interleaved(rounds: int, with_it, without_it) -> tuple[float, float]:
    on, off = [], []
    for _ in range(rounds):
        for fn, into in ((with_it, on), (without_it, off)):
            start = time.perf_counter()
            fn()
            into.append(time.perf_counter() - start)
    return statistics.median(on), statistics.median(off)


def show(what: str, on: float, off: float) -> None:
    print(f"{what:<44} with {on:7.3f} s   without {off:7.3f} s   ratio {on / off:5.2f}   "
          f"difference {1000 * (on - off):+7.1f} ms", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stage", help="measure this stage of check.pipeline.STAGES alone")
    parser.add_argument("--models-from", default=os.path.join(ROOT, "examples", "legendre_p3.py"))
    parser.add_argument("--model", default="legendre_p3")
    parser.add_argument("--orders", help="measure these orders side by side, e.g. 1,2,3")
    args = parser.parse_args(argv)
    if args.stage:
        return one_stage(args)
    if args.orders:
        return orders(args)

    import torch

    from gradcheck_suite import Case, check_case, load
    from gradcheck_suite.check import pipeline
    from gradcheck_suite.run import runner
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)

    model = load().get("mlp_relu")
    cases = [Case("mlp_relu", SEED_DIMS, "float64", "cpu", seed, 1.0) for seed in range(20)]
    stages = pipeline.STAGES
    without = tuple(s for s in stages if s.name != "layouts")
    assert len(without) == len(stages) - 1

    def checks(with_layouts: bool):
        def run():
            pipeline.STAGES = stages if with_layouts else without
            try:
                for case in cases:
                    assert check_case(model, case).verdict == "pass"
            finally:
                pipeline.STAGES = stages
        return run

    checks(True)()      # warm
    show("layouts: 20 mlp_relu cases, seed size", *interleaved(args.rounds, checks(True), checks(False)))

    wrong = load([os.path.join(ROOT, "examples", "wrong.py")]).get("mlp_no_mask")
    diagnose = runner._diagnose

    def failing(with_diagnosis: bool):
        def run():
            runner._diagnose = diagnose if with_diagnosis else (lambda *a: None)
            try:
                assert runner.run_model(wrong, dims=SEED_DIMS, examples=20).verdict == "fail"
            finally:
                runner._diagnose = diagnose
        return run

    failing(True)()
    show("diagnosis: a wrong backward at the seed size", *interleaved(args.rounds, failing(True), failing(False)))

    for what, extra in (("isolate: 9 built-in models, 20 cases each", []),
                        ("isolate: mlp_relu at the seed size",
                         ["mlp_relu", "--dims", ",".join(f"{k}={v}" for k, v in SEED_DIMS.items()),
                          "--dtype", "float64"])):
        def command(isolated: bool, extra=extra):
            return lambda: subprocess.run([*CLI, "check", *extra, "--no-progress", "--isolate" if isolated else "--no-isolate"],
                                          cwd=ROOT, capture_output=True, check=True)
        show(what, *interleaved(args.rounds, command(True), command(False)))
    print(f"load after {os.getloadavg()}")
    return 0


def one_stage(args) -> int:
    """The cost of one stage: 20 cases of one model at its benchmark size, with and without it."""
    import torch

    from gradcheck_suite import Case, check_case, load
    from gradcheck_suite.check import pipeline
    torch.set_num_threads(1)
    stages = pipeline.STAGES
    names = [s.name for s in stages]
    if args.stage not in names:
        print(f"no stage {args.stage!r}; the stages are: {', '.join(names)}", file=sys.stderr)
        return 2
    without = tuple(s for s in stages if s.name != args.stage)
    model = load([args.models_from]).get(args.model)
    cases = [Case(model.name, dict(model.bench_dims), model.dtype, "cpu", seed, 1.0) for seed in range(20)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)

    def checks(with_stage: bool):
        def run():
            pipeline.STAGES = stages if with_stage else without
            try:
                for case in cases:
                    check_case(model, case)
            finally:
                pipeline.STAGES = stages
        return run

    checks(True)()      # warm
    verdicts = {check_case(model, c).verdict for c in cases[:3]}
    show(f"{args.stage}: 20 {model.name} cases ({', '.join(sorted(verdicts))})",
         *interleaved(args.rounds, checks(True), checks(False)))
    print(f"load after {os.getloadavg()}")
    return 0


def orders(args) -> int:
    """The cost of the higher orders: 20 cases of one model at its benchmark size at each order."""
    import dataclasses

    import torch

    from gradcheck_suite import Case, check_case, load
    torch.set_num_threads(1)
    wanted = [int(k) for k in args.orders.split(",")]
    model = load([args.models_from]).get(args.model)
    base = [Case(model.name, dict(model.bench_dims), model.dtype, "cpu", seed, 1.0) for seed in range(20)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load {os.getloadavg()}", flush=True)

    def checks(order: int):
        cases = [dataclasses.replace(c, order=order) for c in base]
        return lambda: [check_case(model, c) for c in cases]

    for k in wanted:
        checks(k)()      # warm
    times: dict[int, list[float]] = {k: [] for k in wanted}
    for _ in range(args.rounds):
        for k in wanted:
            start = time.perf_counter()
            checks(k)()
            times[k].append(time.perf_counter() - start)
    verdicts = {k: sorted({check_case(model, dataclasses.replace(c, order=k)).verdict for c in base[:3]}) for k in wanted}
    first = statistics.median(times[wanted[0]])
    for k in wanted:
        show(f"order {k}: 20 {model.name} cases ({', '.join(verdicts[k])})", statistics.median(times[k]), first)
    print(f"load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
