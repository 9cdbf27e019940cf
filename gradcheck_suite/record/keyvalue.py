"""``K=V,...`` text, as ``--dims``, ``--hyper`` and a reproduce command write it.

Stdlib only: the command line's options read it, and so does the case.
"""
from __future__ import annotations


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
