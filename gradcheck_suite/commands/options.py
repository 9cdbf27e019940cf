"""Option values shared by the command line and the pytest plugin, checked the same way.

Stdlib only: the plugin imports this at pytest's start-up.
"""
from __future__ import annotations

import math

#: --seed: what torch.Generator takes, with room for the seeds the checker derives from it
SEEDS = (0, 2**32 - 1)
#: columns: the tables and messages fit a terminal this wide
WIDTH = 80


def number(option: str, text: str, kind: type = int, low: float = 1, high: float | None = None,
           want: str = "a whole number of at least 1", above_low: bool = False) -> int | float:
    """``text`` as a finite ``kind`` from ``low`` (excluded when ``above_low``) to ``high``;
    otherwise ValueError with one line that echoes the option and the value."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low or (above_low and value == low) \
            or (high is not None and value > high):
        raise ValueError(f"{option} {text}: must be {want}".lstrip())
    return value


def case_timeout(option: str, text: str) -> float | None:
    """Seconds per case; 0 means no limit (None)."""
    return number(option, text, float, 0, None, "seconds, 0 for no limit") or None


def pairs(option: str, text: str | None, example: str) -> list[tuple[str, str]]:
    """``K=V,...`` as (key, value) pairs, in order; ValueError with one line on a bad part."""
    out = []
    for part in _top_level(text) if text else []:
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"{option}: {part!r} is not K=V (e.g. {option} {example})")
        out.append((key, value))
    return out


def _top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes: ``a=(1, 2),b={'k': 3}``."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


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
