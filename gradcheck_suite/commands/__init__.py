"""The command line: ``gradcheck-suite list | check | merge | train | bench | init``.

One module per subcommand, each with its ``add_parser`` and what it runs: :mod:`.listing`,
:mod:`.check`, :mod:`.merge`, :mod:`.train`, :mod:`.init` and :mod:`.bench` (whose options are
its own).
What they share lies below them: :mod:`.options` (the option values, their parsing and the
argument groups), :mod:`.selection` (the project's settings and the models chosen),
:mod:`.outcome` (problems, exit codes and the JSON report) and :mod:`.progress` (the progress
line and heartbeat, shared with the pytest plugin).  This module builds the parser and
dispatches; the commands import downward, never from here.

Exit codes: 0 every model passed, 1 a model failed or errored (a broken model file
included), 2 a usage error (an unknown model, a bad option, a missing file, CUDA asked
for but absent, a case too large for memory), 3 a merge whose reports are not the N parts
of one run (``merge``), 130 interrupted.  Every problem is one
line on stderr and an entry of the JSON report's ``problems``; a problem with one model
or file leaves the others to run, and the JSON report is written whatever happens.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from .outcome import Outcome, unwritable

__all__ = ["main"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """One line per mistake, and no abbreviations: ``--models`` is never ``--models-from``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # one line, and the JSON report still written
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _parse(argv: list[str]) -> argparse.Namespace:
    """The command line; a subcommand's names may come before, between or after its options."""
    ap = _parser()
    command = argv[0] if argv else None
    if command not in ap.commands:        # --help, --version, no command or an unknown one
        return ap.parse_args(argv)
    args = ap.commands[command].parse_intermixed_args(argv[1:])
    args.command = command
    return args


def _subcommands() -> dict:
    """The subcommands the parser knows, by name, in the order of ``--help``; each module has
    ``add_parser(sub)`` and ``run`` (bench, whose options are its own, is handed its command
    line by :func:`main`)."""
    from . import check, init, listing, merge, train
    return {"list": listing, "check": check, "merge": merge, "init": init, "train": train}


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="gradcheck-suite",
        description="Check hand-written backward passes against autograd and finite differences.",
        epilog="Exit codes: 0 all pass, 1 a model fails or errors, 2 usage error, 3 merge: the reports are not "
               "the N parts of one run, 130 interrupted.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{list,check,merge,train,bench,init}")
    for command in _subcommands().values():
        command.add_parser(sub)
    # bench parses its own options (main hands them over unparsed): here only its line of --help
    sub.add_parser("bench", help="time manual backward against autograd and write a report "
                                 "(gradcheck-suite bench --help)")
    ap.commands = sub.choices      # each subcommand's own parser, by name
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # its options are its own: hand them over unparsed
        from . import bench
        return bench.main(argv[1:])
    try:
        args = _parse(argv)
    except _UsageError as e:
        rep = Outcome(_json_option(argv))
        rep.usage_error(str(e))
        return rep.finish()
    if args.command == "init":     # writes a file: no report, no settings
        return _subcommands()["init"].run(args)
    rep = Outcome(args.json)
    if rep.json_path not in (None, "-"):
        problem = unwritable(rep.json_path)
        if problem:  # nothing runs when its report cannot be kept
            rep.json_path = None
            rep.usage_error(problem)
            return rep.finish()
    from .selection import settings
    try:   # merge reads reports, not models: the project's settings do not enter it
        if args.command == "merge" or settings(rep, args):
            _subcommands()[args.command].run(rep, args)
    except KeyboardInterrupt:
        rep.interrupt()
    return rep.finish()


def _json_option(argv: list[str]) -> str | None:
    """The --json path of a command line that could not be parsed as a whole."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--json")
    try:
        path = pre.parse_known_args(argv)[0].json
    except SystemExit:
        return None
    return None if path is None or (path != "-" and unwritable(path)) else path
