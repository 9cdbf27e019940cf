"""Which models a command runs: the project's ``[tool.gradcheck-suite]`` settings under the
command line, the registry loaded with its problems reported, and the models selected by
name.  Shared by list, check and train."""
from __future__ import annotations

import os
import re

from .options import model_names

NOTHING_CONFIGURED = ("no models configured: add [tool.gradcheck-suite] models-from = \"my_models/\" to "
                      "pyproject.toml, or give --models-from (--builtin checks the example models)")


def settings(rep, args) -> bool:
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


def load(rep, args, names: list[str] = ()):
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


def selected(rep, args, reg, lost) -> list:
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


def unconfigured(args) -> bool:
    """Whether nothing says which models to run: no model files (given or in the settings),
    no names, and the built-in examples not asked for."""
    return not (args.models_from or args.asked or args.builtin or args.config.builtin)
