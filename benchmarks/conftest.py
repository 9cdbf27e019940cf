"""pytest setup for the benchmarks (run them with ``gradcheck-suite bench``).

* collects ``bench_*.py`` here, so that ``pytest benchmarks/`` works while the repo's
  default ``pytest`` run (``testpaths = ["tests"]``) never sees them;
* parametrizes ``model`` over the registry and ``device, dtype`` over
  :data:`gradcheck_suite.bench.TARGETS` (CUDA skipped with "CUDA not available");
* ``--bench-quick`` keeps CPU float32 only; ``--bench-models-from`` adds models;
* records the GPU, torch version and thread count in the JSON's machine info.
"""
from __future__ import annotations

import os
import time

import pytest
import torch

from gradcheck_suite import bench
from gradcheck_suite.registry import load

_REGISTRY = pytest.StashKey()


def pytest_addoption(parser):
    group = parser.getgroup("gradcheck-suite benchmarks")
    group.addoption("--bench-quick", action="store_true", help="CPU float32 only: a short CI pass")
    group.addoption("--bench-models-from", action="append", default=[], metavar="PATH",
                    help="also benchmark the models of this file, folder or module; repeatable")


def pytest_collect_file(file_path, parent):
    # a file named on the command line is collected by pytest itself
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _registry(config):
    if _REGISTRY not in config.stash:
        config.stash[_REGISTRY] = load(config.getoption("bench_models_from"))
    return config.stash[_REGISTRY]


def pytest_report_header(config):
    reg = _registry(config)
    lines = [f"gradcheck-suite benchmarks: {len(reg)} models, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads, CUDA {'available' if torch.cuda.is_available() else 'not available'}"]
    lines += [f"model problem: {p}" for p in reg.problems]
    return lines


def pytest_generate_tests(metafunc):
    if "model" in metafunc.fixturenames:
        models = list(_registry(metafunc.config))
        metafunc.parametrize("model", models, ids=[m.name for m in models])
    if {"device", "dtype"} <= set(metafunc.fixturenames):
        no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
        metafunc.parametrize("device,dtype", [
            pytest.param(dev, dt, id=f"{dev}-{dt}", marks=[no_cuda] if dev == "cuda" else [])
            for dev, dt in bench.TARGETS])


def pytest_collection_modifyitems(config, items):
    if not config.getoption("bench_quick"):
        return
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        quick = params.get("device", "cpu") == "cpu" and params.get("dtype", "float32") == "float32"
        (keep if quick else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def registry(request):
    return _registry(request.config)


_START = pytest.StashKey()


def pytest_configure(config):
    config.stash[_START] = (bench.cpu_snapshot(), time.monotonic())


def pytest_benchmark_update_machine_info(config, machine_info):
    # how much else ran on the machine meanwhile: others' work inflates the timings
    snapshot, t0 = config.stash[_START]
    machine_info["other_cores"] = bench.other_cores(snapshot, bench.cpu_snapshot(), time.monotonic() - t0)
    machine_info["torch_version"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_count"] = os.cpu_count()
    machine_info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine_info["cuda_version"] = torch.version.cuda
