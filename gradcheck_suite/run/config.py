"""A project's own settings, once: ``[tool.gradcheck-suite]`` in its ``pyproject.toml``.

    [tool.gradcheck-suite]
    models-from = ["my_models/", "tests/grad_models.py"]   # files, folders or dotted modules
    models = ["rnn_step", "layer_norm"]                    # which to check (default: all of them)
    profile = "quick"                                      # or "nightly"
    dtypes = ["float64", "float32"]                        # default: each model's own
    builtin = false                                        # also the built-in example models

The file is found from the folder a command runs in, or pytest's root, upward: the first
``pyproject.toml`` that has the table.  Paths resolve from that file's folder, so the CLI
and the plugin read the same models from any folder of the project.  Options given on the
command line win.  No torch: the pytest plugin reads this at start-up.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the package depends on tomli there
    import tomli as tomllib

TABLE = "gradcheck-suite"
KEYS = ("models-from", "models", "profile", "dtypes", "builtin")


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class Config:
    path: str | None = None               # the pyproject.toml the settings came from
    models_from: tuple[str, ...] = ()     # resolved from the file's folder
    models: tuple[str, ...] = ()
    profile: str | None = None
    dtypes: tuple[str, ...] = ()
    builtin: bool | None = None

    @property
    def folder(self) -> str | None:
        return os.path.dirname(self.path) if self.path else None


def find(start: str | os.PathLike | None = None) -> Config:
    """The settings of the project around ``start`` (default: the working folder); empty
    settings where no ``pyproject.toml`` upward has ``[tool.gradcheck-suite]``."""
    folder = os.path.abspath(start or os.getcwd())
    while True:
        path = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(path):
            table = _table(path)
            if table is not None:
                return _parse(path, table)
        parent = os.path.dirname(folder)
        if parent == folder:
            return Config()
        folder = parent


def _table(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read as TOML ({e})") from None
    table = doc.get("tool", {}).get(TABLE)
    return table if isinstance(table, dict) else None


def _parse(path: str, table: dict) -> Config:
    where = f"{path}: [tool.{TABLE}]"
    for key in table:
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the keys are {', '.join(KEYS)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    folder = os.path.dirname(path)

    def strings(key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if key != "models-from" else [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key} must be a string or a list of strings, got {value!r}")
        return tuple(value)

    profile = table.get("profile")
    if profile is not None and profile not in ("quick", "nightly"):
        raise ConfigError(f"{where}: profile must be \"quick\" or \"nightly\", got {profile!r}")
    builtin = table.get("builtin")
    if builtin is not None and not isinstance(builtin, bool):
        raise ConfigError(f"{where}: builtin must be true or false, got {builtin!r}")
    from ..record.spec import DTYPES      # no torch: the plugin reads the settings at start-up
    dtypes = strings("dtypes")
    for dtype in dtypes:          # named here, where the user wrote it, not as a --dtype never given
        if dtype not in DTYPES:
            close = difflib.get_close_matches(dtype, DTYPES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: dtypes: {dtype!r} is not one of {', '.join(DTYPES)}{hint}")
    return Config(path, tuple(_resolve(folder, t) for t in strings("models-from")), strings("models"), profile,
                  dtypes, builtin)


def _resolve(folder: str, target: str) -> str:
    """A path from the config file's folder; a dotted module name as it is."""
    if target.endswith(".py") or "/" in target or os.sep in target or os.path.exists(os.path.join(folder, target)):
        return os.path.normpath(os.path.join(folder, target))
    return target
