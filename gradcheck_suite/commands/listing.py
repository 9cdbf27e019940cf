"""``gradcheck-suite list``: the models, the project's own first, then the built-in examples."""
from __future__ import annotations

import argparse
import textwrap

from ..verdict import rules
from .options import add_common
from .selection import NOTHING_CONFIGURED, load, selected, unconfigured


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("list", help="list the models: the project's first, then the built-in examples")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to list, or comma-separated NAME,NAME "
                                                             "(default: all)")
    add_common(p, "list")
    return p


def run(rep, args) -> None:
    """The project's own models first; then the built-in examples under a line that says so
    (only where asked for, as check and bench have them, or where the project has none)."""
    reg, lost = load(rep, args, args.names)
    models = selected(rep, args, reg, lost)
    own = [m for m in models if m.name not in reg.builtin]
    examples = [m for m in models if m.name in reg.builtin]
    rep.listed = []
    if examples and not own and unconfigured(args):
        rep.out.write(textwrap.fill("no models of the project's own: " + NOTHING_CONFIGURED.split(": ", 1)[1], rules.WIDTH)
                      + "\n")
    for m in own:
        _row(rep, reg, m)
    if examples:
        when = "" if args.builtin or args.config.builtin is True else ", checked only with --builtin or by name"
        rep.out.write(("\n" if own else "") + f"built-in examples{when}:")
    for m in examples:
        _row(rep, reg, m)


def _row(rep, reg, m) -> None:
    dims = ", ".join(f"{k}∈[{d.low},{d.high}] bench {d.bench}" for k, d in m.dims.items())
    row = {"name": m.name, "dtype": m.dtype, "dims": {k: vars(d) for k, d in m.dims.items()},
           "differentiable": list(m.differentiable), "origin": reg.origin(m.name),
           "builtin": m.name in reg.builtin, "doc": (m.doc or "").strip().splitlines()[0] if m.doc else ""}
    rep.listed.append(row)
    pad = " " * 21
    text = [textwrap.fill(f"{m.name:<20} {m.dtype:<8} grads: {', '.join(m.differentiable)}", rules.WIDTH,
                          subsequent_indent=pad + " " * 16),
            textwrap.fill(f"dims: {dims}", rules.WIDTH, initial_indent=pad, subsequent_indent=pad + " " * 6)]
    if row["doc"]:
        text.append(textwrap.fill(row["doc"], rules.WIDTH, initial_indent=pad, subsequent_indent=pad))
    rep.out.write("\n".join(text))
