"""pytest hooks for the benchmark suite in ``gradcheck_suite/bench/suite`` (loaded with
``-p gradcheck_suite.bench.hooks`` by ``gradcheck-suite bench``, never by plain pytest).

* collects ``bench_*.py`` files, parametrizes ``model`` over the registry and
  ``device, dtype`` over :data:`~gradcheck_suite.bench.timing.TARGETS` (CUDA skipped with
  "CUDA not available"); ``--bench-quick`` keeps CPU float32 only;
* sets torch's intra-op thread count (``--bench-threads``, 1 by default: with two threads
  torch stalls whenever another process takes a core);
* the ``bench_pair`` fixture checks the model, then times manual and autograd (and a
  matmul of the model's shape) in interleaved rounds under pytest-benchmark's
  ``pedantic`` mode, and records the per-round samples in ``extra_info``; on a row's
  first visit it also measures memory (:mod:`.memory`) in untimed rounds;
* with a baseline (``--bench-baseline``), extra visits (``--bench-extra-visits``) go to
  the rows whose change against it is still undecided, by the sequential rule of
  :mod:`.regression`, until they are decided or the time budget is spent;
* records the thread count, the load and the GPU in the JSON's machine info.
"""
from __future__ import annotations

import os
import time

import pytest

from . import calibration
from . import regression
from . import memory
from . import rows
from . import sharded
from . import timing
from . import verdicts
from ..verdict import rules

_REGISTRY = pytest.StashKey()
_START = pytest.StashKey()
_VERDICTS = pytest.StashKey()
_GATE = pytest.StashKey()


def pytest_addoption(parser):
    group = parser.getgroup("gradcheck-suite benchmarks")
    group.addoption("--bench-quick", action="store_true", help="CPU float32 grid only, short rows, no size sweep (default: full grid and sweep)")
    group.addoption("--bench-models-from", action="append", default=[], metavar="PATH",
                    help="also benchmark the models of this file, folder or module; repeatable")
    group.addoption("--bench-models", metavar="NAMES", help="comma-separated models to benchmark (default: all)")
    group.addoption("--bench-builtin", action="store_true",
                    help="also the built-in example models (default: only the models of --bench-models-from)")
    group.addoption("--bench-root", metavar="DIR", help="the project's folder, for dotted model modules (default: none)")
    group.addoption("--bench-threads", type=int, default=1, metavar="N", help="torch intra-op threads (default: 1)")
    group.addoption("--bench-world-size", type=int, metavar="N",
                    help="run sharded records on N ranks (default: each record's largest world size)")
    group.addoption("--bench-visits", type=int, metavar="N",
                    help=f"visits to every row, spread over the run; the rounds are split among them "
                         f"(default: {rules.QUICK_VISITS} with --bench-quick, else {rules.VISITS})")
    group.addoption("--bench-budget", type=float, metavar="SECONDS",
                    help=f"time per row (default: {rules.BENCH_BUDGETS[True][0]:g} with --bench-quick, else "
                         f"{rules.BENCH_BUDGETS[False][0]:g})")
    group.addoption("--bench-check-json", metavar="FILE",
                    help="read check verdicts from this `gradcheck-suite check --json` report "
                         "(default: run a quick check of each model first)")
    group.addoption("--bench-baseline", metavar="FILE",
                    help="an earlier benchmarks.json: rows still undecided against it get extra visits (default: none)")
    group.addoption("--bench-threshold", type=float, default=rules.DEFAULT_THRESHOLD, metavar="PCT",
                    help=f"the gate's threshold the extra visits decide against (default: {rules.DEFAULT_THRESHOLD:g})")
    group.addoption("--bench-extra-visits", type=int, metavar="N",
                    help=f"most extra visits to an undecided row, a look after every {rules.VISITS_PER_LOOK} "
                         f"(default: {rules.EXTRA_VISITS} with a baseline, else 0)")
    group.addoption("--bench-extra-budget", type=float, default=rules.EXTRA_BUDGET, metavar="SECONDS",
                    help=f"time for all extra visits together (default: {rules.EXTRA_BUDGET:g})")
    group.addoption("--bench-check-examples", type=int, default=verdicts.QUICK_EXAMPLES, metavar="N",
                    help="cases per model in the check before timing; fewer than the quick profile's is not "
                         "check's verdict (default: the quick profile's, as `gradcheck-suite check`)")


def pytest_configure(config):
    import torch

    torch.set_num_threads(config.getoption("bench_threads"))
    config.stash[_START] = (timing.cpu_snapshot(), time.monotonic(), timing.load_average())
    path = config.getoption("bench_check_json")
    config.stash[_VERDICTS] = (verdicts.from_check_json(path) if path else None, {})
    config.stash[_GATE] = _Gate.from_config(config)


class _Gate:
    """The sequential rule during the run: the baseline's rows, every row's visits so far,
    and the time the extra visits have taken."""

    def __init__(self, baseline: dict | None, threshold: float, visits: int, extra: int, budget: float):
        self.baseline = {r.key: r for r in rows.rows(baseline)} if baseline else {}
        self.threshold, self.visits, self.extra, self.budget = threshold, visits, extra, budget
        self.per_look = rules.VISITS_PER_LOOK
        self.looks = -(-extra // self.per_look)
        self.rows = 1           # the rows it will compare, counted once the items are collected
        self.seen: dict[tuple, list] = {}     # row key -> the samples of each visit so far
        self.spent = 0.0

    @classmethod
    def from_config(cls, config) -> _Gate:
        path = config.getoption("bench_baseline")
        baseline = rows.load_run(path, "baseline file") if path else None
        extra = config.getoption("bench_extra_visits")
        if extra is None:
            extra = rules.EXTRA_VISITS if baseline else 0
        return cls(baseline, config.getoption("bench_threshold"), visits_of(config), max(0, extra),
                   config.getoption("bench_extra_budget"))

    @property
    def plan(self) -> regression.Plan:
        return regression.Plan(self.rows, self.visits, self.looks, self.per_look)

    def undecided(self, key: tuple) -> str | None:
        """Why the row needs no extra visit (None: it does)."""
        base = self.baseline.get(key)
        if base is None:
            return "no baseline row to decide against"
        seen = self.seen.get(key, [])
        if base.na or not seen:
            return "no autograd side: no ratio to decide on"
        if self.spent >= self.budget:
            return f"undecided after {len(seen)} visits, and the {self.budget:g} s for extra visits is spent"
        done = len(seen) - self.visits
        if done % self.per_look:             # inside a batch: the next look comes after it
            return None
        status = regression.look(seen, base, self.threshold, self.plan)
        if status != regression.UNCLEAR:
            return f"decided after {len(seen)} visits: {status}"
        return None


def world_size_of(config, model) -> int | None:
    """The ranks a sharded record's rows run on: --bench-world-size, else the record's largest
    world size; None for any other record."""
    if model.sharded is None:
        return None
    return config.getoption("bench_world_size") or sharded.default_world_size(model)


def visits_of(config) -> int:
    """Regular visits to every row: --bench-visits, else more and shorter ones in the quick pass."""
    given = config.getoption("bench_visits")
    return given if given else rules.QUICK_VISITS if config.getoption("bench_quick") else rules.VISITS


def pytest_collect_file(file_path, parent):
    # a file named on the command line is collected by pytest itself
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _registry(config):
    if _REGISTRY not in config.stash:
        from ..run.registry import load

        config.stash[_REGISTRY] = load(config.getoption("bench_models_from"), builtin=config.getoption("bench_builtin"),
                                       root=config.getoption("bench_root"))
    return config.stash[_REGISTRY]


def selected(config) -> list:
    """The registry's models, narrowed by ``--bench-models``."""
    reg = _registry(config)
    names = config.getoption("bench_models")
    if not names:
        return list(reg)
    return [reg.get(n.strip()) for n in names.split(",") if n.strip()]


def pytest_report_header(config):
    import torch

    reg = _registry(config)
    lines = [f"gradcheck-suite benchmarks: {len(reg)} models, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, CUDA {'available' if torch.cuda.is_available() else 'not available'}"]
    lines += [f"model problem: {p}" for p in reg.problems + reg.not_found]
    return lines


def pytest_generate_tests(metafunc):
    import torch

    if "visit" in metafunc.fixturenames:
        visits = range(visits_of(metafunc.config) + metafunc.config.stash[_GATE].extra)
        metafunc.parametrize("visit", visits, ids=[f"visit{v}" for v in visits])
    if "model" in metafunc.fixturenames:
        models = selected(metafunc.config)
        metafunc.parametrize("model", models, ids=[m.name for m in models])
    if {"device", "dtype"} <= set(metafunc.fixturenames):
        no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
        metafunc.parametrize("device,dtype", [
            pytest.param(dev, dt, id=f"{dev}-{dt}", marks=[no_cuda] if dev == "cuda" else [])
            for dev, dt in timing.TARGETS])


def _visit(item) -> int:
    return getattr(getattr(item, "callspec", None), "params", {}).get("visit", 0)


@pytest.hookimpl(trylast=True)     # after -k and -m have deselected: check only what runs
def pytest_collection_modifyitems(config, items):
    # every row once, then every row again: the visits to one row lie far apart in time,
    # so drift of the machine during the run shows up as a spread between visits
    items.sort(key=_visit)
    if config.getoption("bench_quick"):
        _quick_only(config, items)
    _count_gated(config, items)
    _check_first(config, items)


def _count_gated(config, items) -> None:
    """How many rows the gate will judge: the grid rows of this run with a baseline row.
    The report-wide false-flag rate is split over them."""
    import torch

    gate = config.stash[_GATE]
    keys = set()
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        model = params.get("model")
        if model is None or "phase" not in params or "factor" in params or model.two_way:
            continue
        if params.get("device") == "cuda" and not torch.cuda.is_available():
            continue
        key = (rows.GRID, model.name, params.get("device"), params.get("dtype"), params["phase"], None,
               world_size_of(config, model))
        if key in gate.baseline:
            keys.add(key)
    gate.rows = max(1, len(keys))


def _quick_only(config, items) -> None:
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        quick = (params.get("device", "cpu") == "cpu" and params.get("dtype", "float32") == "float32"
                 and "factor" not in params)      # the size sweep belongs to the full run
        (keep if quick else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _check_first(config, items) -> None:
    """Every model's check before any timing.  Run lazily, a check came right before its
    row's first visit and left that visit 4-6% off the others (mlp_relu's backward: 0.60
    against 0.62-0.64), which widened every interval; now every visit follows timing."""
    import torch

    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        model, device, dtype = params.get("model"), params.get("device"), params.get("dtype")
        if model is None or device is None or (device == "cuda" and not torch.cuda.is_available()):
            continue
        if model.two_way:
            continue
        try:
            _verdict(config, model, dtype, device)
        except Exception:  # the row's own visit runs it again and fails with the error
            continue


@pytest.fixture(scope="session")
def registry(request):
    return _registry(request.config)


@pytest.fixture(scope="session")
def selected_names(request):
    return {m.name for m in selected(request.config)}


def _verdict(config, model, dtype: str, device: str) -> dict:
    given, cache = config.stash[_VERDICTS]
    if given is not None:
        return verdicts.lookup(given, model.name, dtype, device)
    key = (model.name, dtype, device)
    if key not in cache:
        cache[key] = verdicts.quick_check(model, dtype, device, config.getoption("bench_check_examples"),
                                          _registry(config).asked_as(model.name))
    return cache[key]


@pytest.fixture
def bench_pair(request, benchmark):
    """bench_pair(model, dims, phase, device, dtype, table, visit, **extra): check, then time in rounds."""
    import torch

    config = request.config
    budget, low, high = rules.BENCH_BUDGETS[config.getoption("bench_quick")]
    budget = config.getoption("bench_budget") or budget
    visits = visits_of(config)
    budget, low, high = budget / visits, max(1, low // visits), max(1, high // visits)
    gate = config.stash[_GATE]

    def run(model, dims, phase, device, dtype, table, visit, **extra):
        if model.two_way:
            pytest.skip(f"{model.name}: numpy code without a reference has no autograd side to time against")
        world_size = world_size_of(config, model)
        key = (table, model.name, device, dtype, phase, extra.get("factor"), world_size)
        if model.sharded is not None:
            why = sharded.unfit(model, dims, world_size) or (
                None if device == "cpu" else "sharded records run on the CPU (gloo)")
            if why:
                pytest.skip(why)
        if visit >= visits:                 # an extra visit: only while the row is undecided
            why = gate.undecided(key) if table == rows.GRID else "size-sweep rows are not gated"
            if why:
                pytest.skip(why)
        started = time.perf_counter()
        check = _verdict(config, model, dtype, device)
        if model.sharded is not None:
            benchmark.group = f"{table} {device} {dtype} {phase}"
            found = {}

            def timed():
                found.update(sharded.run(model, dims, phase, dtype, world_size, budget=budget, low=low, high=high,
                                         measure_memory=visit == 0 and table == rows.GRID))
            benchmark.pedantic(timed, rounds=1, iterations=1)     # the ranks' own samples are the row's
            if not found["autograd_na"]:
                gate.seen.setdefault(key, []).append(found["samples"])
            if visit >= visits:
                gate.spent += time.perf_counter() - started
            benchmark.extra_info.update(table=table, model=model.name, phase=phase, device=device, dtype=dtype,
                                        dims=dict(dims), flops=None, threads=1, check=check, visit=visit,
                                        matmul=None, memory=found.pop("memory", None), **found, **extra)
            return
        sides = {impl: timing.region(model, dims, impl, phase, device, dtype) for impl in timing.IMPLS}
        flops = sides["manual"].flops
        shape = calibration.matmul_shape(dims)
        if flops:
            sides["matmul"] = calibration.matmul_region(shape, device, dtype)
        timer = timing.Interleaved(sides, block_seconds=rules.BLOCK_SECONDS)
        fewest = rules.MIN_ROTATIONS * len(sides)      # a visit is one observation of the gate
        rounds = timer.rounds_for(budget, max(low, fewest), max(high, fewest))
        benchmark.group = f"{table} {device} {dtype} {phase}"
        benchmark.pedantic(timer.round, rounds=rounds, iterations=1)
        gate.seen.setdefault(key, []).append(timer.samples)
        mem = _memory(model, dims, device, dtype) if visit == 0 and table == rows.GRID else None
        if visit >= visits:
            gate.spent += time.perf_counter() - started
        benchmark.extra_info.update(
            table=table, model=model.name, phase=phase, device=device, dtype=dtype, dims=dict(dims), flops=flops,
            threads=torch.get_num_threads(), check=check, visit=visit, samples=timer.samples, calls=timer.calls,
            matmul={"shape": list(shape), "flops": sides["matmul"].flops} if flops else None, memory=mem, **extra)
    return run


def _memory(model, dims, device: str, dtype: str) -> dict:
    """The memory of both sides, with how the peak was measured; the error, if it failed
    (the times still count)."""
    try:
        found = memory.measure(model, dims, device, dtype)
    except Exception as e:  # a user's model under the profiler or the saved-tensor hooks
        return {"error": f"{type(e).__name__}: {e}"}
    method = memory.PEAK_METHOD["cuda" if device.startswith("cuda") else "cpu"]
    numpy = model.held_as.numpy_arrays
    if numpy:
        method += "; numpy's arrays through tracemalloc, added"
    return {side: m.to_json() for side, m in found.items()} | {"peak_method": method, "approximate_peak": numpy}


def pytest_benchmark_update_machine_info(config, machine_info):
    import torch

    # how much else ran on the machine meanwhile: others' work inflates absolute times
    snapshot, t0, load_start = config.stash[_START]
    machine_info["other_cores"] = timing.other_cores(snapshot, timing.cpu_snapshot(), time.monotonic() - t0)
    machine_info["load_average"] = {"start": load_start, "end": timing.load_average()}
    machine_info["torch_version"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine_info["cuda_version"] = torch.version.cuda
    machine_info["quick"] = bool(config.getoption("bench_quick"))
    gate = config.stash[_GATE]
    # the report judges with the same per-look confidence the run decided with
    machine_info["gate"] = {"visits": gate.visits, "extra_visits": gate.extra, "visits_per_look": gate.per_look,
                            "looks": gate.looks, "rows": gate.rows, "false_flag_rate": rules.FALSE_FLAG_RATE,
                            "tail": gate.plan.tail, "min_visits": rules.MIN_VISITS,
                            "threshold": gate.threshold, "extra_seconds": round(gate.spent, 3)}
