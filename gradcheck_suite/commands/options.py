"""Option values shared by the command line and the pytest plugin, checked the same way,
and the argument groups the subcommands share (:func:`add_common`).

Stdlib only: the plugin imports this at pytest's start-up.
"""
from __future__ import annotations

import argparse
import math
import re

from ..record.keyvalue import pairs

#: --seed: what torch.Generator takes, with room for the seeds the checker derives from it
SEEDS = (0, 2**32 - 1)


def number(option: str, text: str, numeric: type = int, low: float = 1, high: float | None = None,
           want: str = "a whole number of at least 1", above_low: bool = False) -> int | float:
    """``text`` as a finite ``numeric`` (int or float) from ``low`` (excluded when ``above_low``)
    to ``high``; otherwise ValueError with one line that echoes the option and the value."""
    try:
        value = numeric(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low or (above_low and value == low) \
            or (high is not None and value > high):
        raise ValueError(f"{option} {text}: must be {want}".lstrip())
    return value


def case_timeout(option: str, text: str) -> float | None:
    """Seconds per case; 0 means no limit (None)."""
    return number(option, text, float, 0, None, "seconds, 0 for no limit") or None


def shard(option: str, text: str) -> tuple[int, int]:
    """``K/N``: the K-th of N parts (1 <= K <= N), as ``(K, N)``; otherwise ValueError with one
    line that echoes the option and the value."""
    head = f"{option} {text}".lstrip()
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text, re.ASCII)
    if found is None:
        raise ValueError(f"{head}: must be K/N, the K-th of N parts, e.g. 1/3")
    k, n = int(found[1]), int(found[2])
    if n < 1:
        raise ValueError(f"{head}: N must be at least 1")
    if not 1 <= k <= n:
        raise ValueError(f"{head}: K must be from 1 to N ({n})")
    return k, n


def model_names(*groups) -> list[str]:
    """The models a command line names, in one form for every command and the plugin:
    positional names, ``--models`` repeated, and comma lists in either, each name once, in
    order (``a,b c --models d,a`` is a, b, c, d).  Empty parts of a list are dropped."""
    out: list[str] = []
    for group in groups:
        for text in [group] if isinstance(group, str) else group or ():
            for name in text.split(","):
                name = name.strip()
                if name and name not in out:
                    out.append(name)
    return out


def add_common(p: argparse.ArgumentParser, verb: str = "check") -> None:
    """The options every subcommand that reads models has (list, check, train): which
    models, from where, the JSON report, tracebacks and the built-in examples."""
    p.add_argument("--models", action="append", default=[], metavar="NAME[,NAME...]",
                   help=f"models to {verb}, the same as NAME ...: comma-separated, repeatable "
                        "(default: the settings' models, else all)")
    p.add_argument("--models-from", action="append", default=[], metavar="PATH",
                   help="a model file, a folder of them, or a dotted module name; repeatable (default: none)")
    p.add_argument("--json", metavar="FILE",
                   help="also write a JSON report to FILE; '-' writes it to stdout and the rest to stderr")
    p.add_argument("--verbose", "-v", action="store_true", help="show tracebacks from model code")
    p.add_argument("--builtin", action="store_true",
                   help="also the built-in example models (default: only where the project's settings say "
                        "builtin = true, or when named)")


def parse_into(rep, args, opts: dict, parse: dict) -> bool:
    """Each option given on the command line, parsed into ``opts``; every mistake reported
    in one line (not just the first) through ``rep.usage_error``.  False where any was wrong."""
    ok = True
    for key, value in parse.items():
        if getattr(args, key) is not None:
            try:
                opts[key] = value()
            except ValueError as e:
                rep.usage_error(str(e))
                ok = False
    return ok


def parse_dims(text: str | None) -> dict[str, int]:
    """``--dims K=V,...``: each size a whole number of at least 1; ValueError with one line."""
    dims = {}
    for key, value in pairs("--dims", text, "N=64,D_in=1000"):
        try:
            size = int(value)
        except ValueError:
            raise ValueError(f"--dims: {key}={value!r} is not a whole number") from None
        if size < 1:
            raise ValueError(f"--dims: {key}={size} must be at least 1")
        dims[key] = size
    return dims
