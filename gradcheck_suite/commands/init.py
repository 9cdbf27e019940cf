"""``gradcheck-suite init KIND NAME``: write a starting model file of that kind, which passes
the check as written (the templates are :mod:`.scaffold`'s)."""
from __future__ import annotations

import argparse
import os
import sys

from . import scaffold
from .outcome import EXIT_OK, EXIT_USAGE


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("init", help="write a starting model file that passes the check")
    p.add_argument("kind", choices=scaffold.WORDS, type=scaffold.kind_choice, metavar="KIND",
                   help=f"one of {', '.join(scaffold.WORDS)}")
    p.add_argument("name", metavar="NAME", help="the model's name; the file is NAME.py")
    p.add_argument("--out", metavar="PATH", help="where to write the file (default: NAME.py here)")
    return p


def run(args) -> int:
    """Write the file, or say in one line why not (exit 2)."""
    try:
        scaffold.render(args.kind, args.name)       # a bad NAME first, before any model file is read
        taken = _taken(args.name, args.out)
        if taken:
            raise ValueError(taken)
        path = scaffold.write(args.kind, args.name, args.out)
    except (ValueError, OSError) as e:
        print(f"gradcheck-suite: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path}; check it with:\n  gradcheck-suite check {args.name} --models-from {path}")
    return EXIT_OK


def _taken(name: str, out: str | None) -> str | None:
    """Where a model called ``name`` already exists: a built-in example (which a check that
    names a model loads alongside), an installed package's, the project's settings' models,
    or a model file in the folder ``--out`` names.  Files that do not load are left to check."""
    from ..run import registry
    from ..run.config import ConfigError, find
    try:
        cfg = find()
    except ConfigError:
        cfg = None
    targets = list(cfg.models_from) if cfg else []
    folder = out if out and (os.path.isdir(out) or out.endswith(os.sep)) else os.path.dirname(out or "")
    if folder and os.path.isdir(folder):      # a folder named with --out: never the working folder's scripts
        targets.append(folder)
    reg = registry.load(targets, root=cfg.folder if cfg else None)
    if name not in reg:
        return None
    what = "a built-in example model" if name in reg.builtin else "a model"
    return f"{what} named {name!r} already exists ({reg.origin(name)}); choose another NAME"
