"""pytest plugin: parametrizes any test that asks for ``gradcheck_target`` over the
registry, one test per model × device × dtype (ids like ``mlp_relu-cpu-float64``).

Importing it costs nothing: torch and the registry load only when a test asks.

    def test_backward(gradcheck_target):
        gradcheck_target.check()
"""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from .commands.options import case_timeout, model_names, number, shard
from .record.spec import foreign_dtype
from .verdict import rules


def _checked(parse):
    """An argparse type from a parser of ours: its one-line message, no traceback."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


_OPTIONS = (
    ("--gradcheck-models", dict(metavar="NAME[,NAME...]", action="append", default=[],
                                help="models to check: comma-separated, repeatable (default: the project's "
                                     "[tool.gradcheck-suite] models, else all registered)")),
    ("--gradcheck-models-from", dict(metavar="PATH", action="append", default=[],
                                     help="model file, folder or dotted module to add; repeatable (default: the "
                                          "project's [tool.gradcheck-suite] models-from)")),
    ("--gradcheck-builtin", dict(action="store_true", default=False,
                                 help="also the built-in example models (default: only where the project's "
                                      "settings say builtin = true, or when named)")),
    ("--gradcheck-device", dict(metavar="DEVICES", default="cpu,cuda",
                                help="comma-separated devices; cuda is skipped when absent (default: cpu,cuda)")),
    ("--gradcheck-dtype", dict(metavar="DTYPES", default=None,
                               help="comma-separated dtypes (default: each model's own)")),
    ("--gradcheck-profile", dict(metavar="NAME", default=None, choices=["quick", "nightly"],
                                 help="hypothesis profile: quick or nightly (default: the project's, else quick)")),
    ("--gradcheck-compile", dict(metavar="BACKEND", nargs="?", const=rules.COMPILE_BACKEND, default=None,
                                 choices=rules.COMPILE_BACKENDS,
                                 help=f"also check each case under torch.compile with this backend "
                                      f"({', '.join(rules.COMPILE_BACKENDS)}; alone: {rules.COMPILE_BACKEND}); a "
                                      "record's compile=False opts out (default: off, on in the nightly profile)")),
    ("--gradcheck-compile-fullgraph", dict(action="store_true", default=False,
                                           help="where a case runs under torch.compile, a graph break is an error "
                                                "naming its reason (default: off, a note)")),
    ("--gradcheck-order", dict(metavar="N", default=None, type=_checked(lambda t: number("", t)),
                               help="the highest derivative checked, over each record's order: 2 is double "
                                    "backward, 3 the third derivative (default: each record's own, 1)")),
    ("--gradcheck-examples", dict(metavar="N", default=None,
                                  type=_checked(lambda t: number("", t)),
                                  help="generated cases per target (default: the profile's)")),
    ("--gradcheck-case-timeout", dict(metavar="SECONDS", default=rules.CASE_TIMEOUT,
                                      type=_checked(lambda t: case_timeout("", t)),
                                      help="a case running longer is abandoned as an error; 0 for no limit "
                                           f"(default: {rules.CASE_TIMEOUT:g})")),
    ("--gradcheck-threads", dict(metavar="N", default=rules.THREADS, type=_checked(lambda t: number("", t)),
                                 help="torch intra-op threads while a check runs; use pytest-xdist (-n auto) "
                                      f"for more cores (default: {rules.THREADS})")),
    ("--gradcheck-shard", dict(metavar="K/N", default=None, type=_checked(lambda t: shard("", t)),
                               help="only the K-th of N parts of the selected models, the same parts as "
                                    "'gradcheck-suite check --shard K/N' (default: all)")),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradcheck-suite: hand-written backward checks")
    for name, kwargs in _OPTIONS:
        group.addoption(name, **kwargs)


@dataclasses.dataclass
class GradcheckTarget:
    """One model on one device in one dtype; ``check()`` fails the test with the report."""

    name: str
    device: str
    dtype: str | None
    options: dict
    problem: str | None = None
    models_from: str | None = None

    def check(self) -> None:
        if self.problem:
            pytest.fail(self.problem, pytrace=False)
        from .run import report
        from .run.runner import run_model

        import torch

        model = _registry(self.options).get(self.name)
        why = self.dtype and foreign_dtype(model.dtype, self.dtype)
        if why:
            pytest.skip(f"{model.name}: {why}")
        progress = _heartbeat(self.options, model.name, self.dtype or model.dtype, self.device)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.options["threads"])   # the user's other tests keep their own count
        try:
            run = run_model(model, dtype=self.dtype, device=self.device, profile=self.options["profile"],
                            examples=self.options["examples"], case_timeout=self.options["case_timeout"],
                            compile=self.options.get("compile"), order=self.options.get("order"),
                            fullgraph=bool(self.options.get("fullgraph")),
                            on_case=None if progress is None else progress.update,
                            on_tick=None if progress is None else progress.tick)
        finally:
            torch.set_num_threads(threads)
        if run.verdict != "pass":
            pytest.fail(report.run_details(run, self.models_from), pytrace=False)
        for note in run.notes.values():     # e.g. the quick profile's time budget cut the cases: never silent
            _write(f"gradcheck-suite: {run.model}: note: {note}")

    def train(self, *, steps: int | None = None, lr: float | None = None, optimizer: str | None = None,
              batch: str | None = None, dims: dict | None = None, seed: int = 0):
        """Train with the manual gradient next to autograd (``gradcheck-suite train``); the
        result, or the test fails with its message unless the verdict is ``same``."""
        if self.problem:
            pytest.fail(self.problem, pytrace=False)
        import torch

        from .commands.train import details
        from .train import Options, train

        model = _registry(self.options).get(self.name)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.options["threads"])
        try:
            result = train(model, Options(steps=steps, lr=lr, optimizer=optimizer, batch=batch, dims=dims,
                                          dtype=self.dtype, seed=seed, device=self.device))
        finally:
            torch.set_num_threads(threads)
        if result.verdict != "same":
            pytest.fail(details(result), pytrace=False)
        return result


_CACHE: dict = {}
_CONFIG: list = []      # the running session's config, for its terminal reporter


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG[:] = [config]


def _write(text: str) -> bool:
    """A line on pytest's terminal, past its output capture; False where there is none
    (``-p no:terminal``, a pytest-xdist worker)."""
    reporter = _CONFIG[0].pluginmanager.get_plugin("terminalreporter") if _CONFIG else None
    if reporter is None:
        return False
    reporter.ensure_newline()
    reporter.write_line(text)
    return True


class _Lines:
    def write(self, text: str, end: str = "\n") -> None:
        _write(text)


def _heartbeat(options: dict, name: str, dtype: str, device: str):
    """The command line's heartbeat for one check: a line every ``rules.HEARTBEAT`` seconds
    (``GRADCHECK_SUITE_HEARTBEAT`` overrides) while it runs, naming the case and its phase,
    on a terminal or not, so that a long check (a 4096-wide layer) is never silence."""
    from .commands.progress import Progress, heartbeat_interval
    from .run.strategies import PROFILES
    if not _CONFIG or _CONFIG[0].pluginmanager.get_plugin("terminalreporter") is None:
        return None
    goal = options["examples"] or PROFILES[options["profile"]]["max_examples"]
    progress = Progress(_Lines(), 1, enabled=True, goal=goal, heartbeat=heartbeat_interval())
    progress.start(0, name, dtype, device)
    progress.label = f"{name} {dtype} {device}"
    return progress


def _registry(options: dict):
    key = (tuple(options["models_from"]), options["builtin"], options["root"])
    if key not in _CACHE:
        from .run import registry
        _CACHE[key] = registry.load(list(key[0]), builtin=options["builtin"], root=options["root"])
    return _CACHE[key]


def _options(config: pytest.Config) -> dict:
    """The command line's options over the project's ``[tool.gradcheck-suite]`` settings."""
    from .run.config import ConfigError, find
    try:
        cfg, problem = find(config.rootpath), None
    except ConfigError as e:
        from .run.config import Config
        cfg, problem = Config(), str(e)
    given = config.getoption("--gradcheck-models-from")
    from_config = not given and bool(cfg.models_from)
    named = model_names(config.getoption("--gradcheck-models"))
    return {
        "models": named or list(cfg.models),
        "models_from": given or list(cfg.models_from),
        "from_config": from_config,
        # the built-in models are examples: loaded when asked for, by the option, the settings or a name
        "builtin": config.getoption("--gradcheck-builtin") or cfg.builtin is True or bool(named),
        "root": cfg.folder,
        "config_problem": problem,
        "devices": config.getoption("--gradcheck-device"),
        "dtypes": config.getoption("--gradcheck-dtype") or (",".join(cfg.dtypes) or None),
        "profile": config.getoption("--gradcheck-profile") or cfg.profile or "quick",
        "examples": config.getoption("--gradcheck-examples"),
        "compile": config.getoption("--gradcheck-compile"),
        "fullgraph": config.getoption("--gradcheck-compile-fullgraph"),
        "order": config.getoption("--gradcheck-order"),
        "case_timeout": config.getoption("--gradcheck-case-timeout"),
        "threads": config.getoption("--gradcheck-threads"),
        "shard": config.getoption("--gradcheck-shard"),
    }


def _targets(options: dict) -> list:
    import torch

    from .record.spec import DTYPES

    if options["config_problem"]:
        return [pytest.param(GradcheckTarget("config", "cpu", None, options, problem=options["config_problem"]),
                             id="config-problem")]
    if not (options["models_from"] or options["builtin"]):
        text = ("no models configured: add [tool.gradcheck-suite] models-from = \"my_models/\" to pyproject.toml, "
                "or give --gradcheck-models-from (--gradcheck-builtin checks the example models)")
        return [pytest.param(GradcheckTarget("none", "cpu", None, options, problem=text), id="no-models-configured")]
    reg = _registry(options)
    params = [pytest.param(GradcheckTarget(f"load-{i}", "cpu", None, options, problem=text), id=f"load-problem-{i}")
              for i, text in enumerate(reg.not_found + reg.problems)]
    names = options["models"] or reg.names()
    dtypes = options["dtypes"].split(",") if options["dtypes"] else [None]
    devices = options["devices"].split(",")
    for bad in [d for d in dtypes if d is not None and d not in DTYPES] + [d for d in devices if d not in ("cpu", "cuda")]:
        params.append(pytest.param(GradcheckTarget(bad, "cpu", None, options,
                                                   problem=f"--gradcheck-dtype/--gradcheck-device: unknown value {bad!r}"),
                                   id=f"bad-option-{bad}"))
    mine = None
    if options["shard"] is not None:      # the command line's split of the same models
        from .run.shard import part
        mine = {m.name for m in part([reg.get(n) for n in names if n in reg], *options["shard"])}
    for name in names:
        try:
            model = reg.get(name)
        except KeyError as e:
            params.append(pytest.param(GradcheckTarget(name, "cpu", None, options, problem=str(e)), id=f"{name}-unknown"))
            continue
        if mine is not None and name not in mine:
            continue
        for device in [d for d in devices if d in ("cpu", "cuda")]:
            for dtype in [d for d in dtypes if d is None or d in DTYPES]:
                shown = dtype or model.dtype
                marks = ([pytest.mark.skip(reason="CUDA not available")]
                         if device == "cuda" and not torch.cuda.is_available() else [])
                asked = None if options["from_config"] else reg.asked_as(name)    # settings: found from any folder
                target = GradcheckTarget(name, device, dtype, options, models_from=asked)
                params.append(pytest.param(target, id=f"{name}-{device}-{shown}", marks=marks))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gradcheck_target" in metafunc.fixturenames:
        metafunc.parametrize("gradcheck_target", _targets(_options(metafunc.config)))
