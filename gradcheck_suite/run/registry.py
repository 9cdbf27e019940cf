"""Where models come from: the built-in ``models/`` package, files or modules a user
names (``--models-from``), and the ``gradcheck_suite.models`` entry-point group.

Loading never stops at the first bad file: each problem is kept, with the file, the
model and the field, and everything that did load is still there.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import re
import sys
import traceback
from collections.abc import Iterator
from types import ModuleType

from ..record.spec import Model, SpecError

ENTRY_POINT_GROUP = "gradcheck_suite.models"
FACTORY = "gradcheck_models"   # a model file may define its models through this function


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Registry:
    def __init__(self) -> None:
        self._models: dict[str, Model] = {}
        self._origin: dict[str, str] = {}
        self._asked: dict[str, str] = {}
        self.problems: list[str] = []      # broken model files and records
        self.not_found: list[str] = []     # files or modules that do not exist (a usage error)
        self.tracebacks: dict[str, str] = {}
        self.builtin: set[str] = set()     # the names of the built-in example models
        self._files: set[str] = set()      # every model file read, by its resolved path: each is read once

    def __iter__(self) -> Iterator[Model]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def names(self) -> list[str]:
        return list(self._models)

    def origin(self, name: str) -> str:
        return self._origin[name]

    def asked_as(self, name: str) -> str | None:
        """The ``--models-from`` target a model came from, or None for built-in ones."""
        return self._asked.get(name)

    def get(self, name: str) -> Model:
        try:
            return self._models[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._models, n=3)
            own = [n for n in self._models if n not in self.builtin]
            examples = [n for n in self._models if n in self.builtin]
            known = "; ".join(filter(None, [", ".join(own), examples and f"built-in examples: {', '.join(examples)}"]))
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {known or 'none'}"
            raise UnknownModel(f"unknown model {name!r}{hint}") from None

    def register(self, model: Model, origin: str = "<code>") -> Model:
        """Add one model; a second model of the same name is refused."""
        if not isinstance(model, Model):
            raise TypeError(f"{origin}: register() takes a gradcheck_suite.Model, got {type(model).__name__}")
        known = self._models.get(model.name)
        if known is model:
            return model
        if known is not None:
            raise SpecError(model.name, "name", f"duplicate name: a model {model.name!r} is already registered "
                                                f"from {self._origin[model.name]}", where=origin)
        self._models[model.name] = model
        self._origin[model.name] = origin
        return model

    def load_module(self, module: ModuleType, origin: str) -> int:
        """Register every Model defined at the top of ``module`` (also in a top-level list
        or tuple of them, or returned by a ``gradcheck_models()`` function); keep problems."""
        try:
            found = _models_in(module)
        except SpecError as e:
            self.problems.append(str(e.located(origin)))
            return 0
        except Exception as e:  # the user's factory function
            self._fail(f"{origin}: gradcheck_models() raised {type(e).__name__}: {e}", e)
            return 0
        if not found:
            self.problems.append(f"{origin}: defines no gradcheck_suite.Model")
        count = 0
        for m in found:
            try:
                self.register(m, origin)
                count += 1
            except SpecError as e:
                self.problems.append(str(e))
        return count

    def load_file(self, path: str) -> int:
        """Import a model file (or every ``*.py`` in a folder) and register its models."""
        if os.path.isdir(path):
            files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".py") and not f.startswith("_"))
            if not files:
                self.problems.append(f"{path}: folder holds no model files (*.py)")
            return sum(self.load_file(f) for f in files)
        if not os.path.isfile(path):
            self.not_found.append(f"{path}: no such file or module")
            return 0
        if not self._first_time(path):   # a file and its folder, or one file by two paths: its models once
            return 0
        name = "gradcheck_suite_user_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(path))
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            self.problems.append(f"{path}: not a Python file")
            return 0
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        _importable(os.path.dirname(os.path.abspath(path)))   # a model file may import the files beside it
        try:
            spec.loader.exec_module(module)
        except SpecError as e:
            self.problems.append(str(e.located(_line_in(e, path))))
            return 0
        except BaseException as e:  # a user's model file: report, load the rest
            if isinstance(e, KeyboardInterrupt):
                raise
            sys.modules.pop(name, None)
            field = _unknown_field(e)
            if field is not None:
                self._fail(f"{_line_in(e, path)}: {field}", e)
            else:
                self._fail(f"{_line_in(e, path)}: the model file raised {type(e).__name__}: {e}", e)
            return 0
        return self.load_module(module, path)

    def load_module_name(self, dotted: str) -> int:
        try:
            module = importlib.import_module(dotted)
        except SpecError as e:
            self.problems.append(str(e.located(dotted)))
            return 0
        except ModuleNotFoundError as e:
            if e.name and dotted.startswith(e.name):
                self.not_found.append(f"{dotted}: no such file or module")
            else:
                self._fail(f"{dotted}: the model module raised {type(e).__name__}: {e}", e)
            return 0
        except Exception as e:
            self._fail(f"{dotted}: the model module raised {type(e).__name__}: {e}", e)
            return 0
        path = getattr(module, "__file__", None)
        if path and not self._first_time(path):     # the file of a module already read by its path
            return 0
        return self.load_module(module, path or dotted)

    def _first_time(self, path: str) -> bool:
        """Whether the model file at ``path`` is read for the first time (and note it)."""
        real = os.path.realpath(path)
        if real in self._files:
            return False
        self._files.add(real)
        return True

    def load(self, target: str) -> int:
        """A path (file or folder) or a dotted module name."""
        before = set(self._models)
        if target.endswith(".py") or os.sep in target or os.path.exists(target):
            count = self.load_file(target)
        else:
            _importable(os.getcwd())   # a dotted module of the folder the user runs in, as `python -m` finds it
            count = self.load_module_name(target)
        for name in set(self._models) - before:
            self._asked[name] = target
        return count

    def _fail(self, text: str, e: BaseException) -> None:
        self.problems.append(text)
        self.tracebacks[text] = "".join(traceback.format_exception(e))

    def load_builtin(self) -> int:
        from .. import models

        count, before = 0, set(self._models)
        for info in sorted(pkgutil.iter_modules(models.__path__), key=lambda i: i.name):
            count += self.load_module_name(f"{models.__name__}.{info.name}")
        self.builtin |= set(self._models) - before
        return count

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> int:
        count = 0
        for ep in importlib.metadata.entry_points(group=group):
            origin = f"entry point {ep.name} = {ep.value}"
            try:
                obj = ep.load()
            except Exception as e:
                self._fail(f"{origin}: loading raised {type(e).__name__}: {e}", e)
                continue
            if isinstance(obj, ModuleType):
                count += self.load_module(obj, origin)
                continue
            for m in (obj if isinstance(obj, (list, tuple)) else [obj]):
                try:
                    self.register(m, origin)
                    count += 1
                except (SpecError, TypeError) as e:
                    self.problems.append(str(e))
        return count


def _unknown_field(e: BaseException) -> str | None:
    """A misspelled field of a record (``Model(param=...)``), said as such, with the nearest name."""
    import dataclasses
    import inspect

    from .. import kinds

    makers = "|".join([r"Model\.__init__", *kinds.FACTORIES])
    found = re.search(rf"({makers})\(\) got an unexpected keyword argument '(\w+)'",
                      str(e)) if isinstance(e, TypeError) else None
    if found is None:
        return None
    known = {f.name for f in dataclasses.fields(Model)} - {"kind", "op"}
    for name in kinds.FACTORIES:
        known |= set(inspect.signature(getattr(kinds, name)).parameters) - {"fields", "op", "forward", "backward"}
    close = difflib.get_close_matches(found.group(2), sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; the fields are {', '.join(sorted(known))}"
    return f"unknown field {found.group(2)!r}{hint}"


def _models_in(module: ModuleType) -> list[Model]:
    found: list[Model] = []
    for value in vars(module).values():
        if isinstance(value, Model):
            found.append(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(m, Model) for m in value):
            found.extend(value)
    factory = vars(module).get(FACTORY)
    if callable(factory):
        made = factory()
        made = list(made) if isinstance(made, (list, tuple)) else [made]
        bad = [m for m in made if not isinstance(m, Model)]
        if bad:
            raise TypeError(f"it must return Model records, got {type(bad[0]).__name__}")
        found.extend(made)
    unique: dict[int, Model] = {id(m): m for m in found}
    return list(unique.values())


def _importable(folder: str) -> None:
    if folder not in sys.path:
        sys.path.insert(0, folder)


def _line_in(e: BaseException, path: str) -> str:
    """``path:line`` of the deepest frame of ``e`` inside ``path``."""
    real = os.path.realpath(path)
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if os.path.realpath(f.filename) == real]
    if not lines and isinstance(e, SyntaxError) and e.lineno:
        lines = [e.lineno]
    return f"{path}:{lines[-1]}" if lines else path


def load(models_from: list[str] | tuple[str, ...] = (), *, builtin: bool = True, entry_points: bool = True,
         root: str | None = None) -> Registry:
    """A registry with the built-in models, entry points, and the user's files or modules;
    ``root``, the project's folder (its configuration's), makes its dotted modules importable."""
    if root is not None:
        _importable(root)
    reg = Registry()
    if builtin:
        reg.load_builtin()
    if entry_points:
        reg.load_entry_points()
    for target in models_from:
        reg.load(target)
    return reg
