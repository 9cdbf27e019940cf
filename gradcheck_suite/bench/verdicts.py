"""The check verdict that every benchmark row carries.

A hand-written backward that is wrong can be fast (it skips work it should do), so a
speed figure means nothing without the check.  Before a model is timed, the bench
either runs the check (:func:`quick_check`: the checker's quick profile, the same cases
``gradcheck-suite check`` runs, corners included) or reads the verdict from a ``gradcheck-suite check --json`` report
(:func:`from_check_json`).  A row whose verdict is not ``pass`` is never a winner.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

#: Cases per model, dtype and device for the check before timing: None is the quick
#: profile's own count, so that the verdict on a bench row is the verdict of `check`
#: (5 cases cut the corner schedule short, and passed a backward that `check` fails).
QUICK_EXAMPLES: int | None = None
PASS, NOT_CHECKED = "pass", "not checked"


def quick_check(model, dtype: str, device: str, examples: int | None = QUICK_EXAMPLES,
                models_from: str | None = None) -> dict:
    """Run the checker's quick profile (``examples`` cases where given; fewer than the
    profile's is not the verdict of ``check``): {verdict, source, reproduce}.

    ``models_from`` is where the model came from, for the reproducing command."""
    from ..run.runner import run_model
    from ..run.strategies import PROFILES

    run = run_model(model, dtype=dtype, device=device, profile="quick", examples=examples)
    reproduce = run.failure.case.command(models_from) if run.failure is not None else None
    full = PROFILES["quick"]["max_examples"]
    source = "quick check" if examples is None or examples == full else f"quick check, {examples} cases"
    if examples is not None and examples < full and run.verdict == PASS:
        source += f" (fewer than check's {full}: not check's verdict)"
    return {"verdict": run.verdict, "source": source, "reproduce": reproduce}


class CheckFileError(Exception):
    """The check report cannot be read: a usage error."""


def from_check_json(path: str) -> dict[tuple[str, str, str], dict]:
    """(model, dtype, device) -> {verdict, source, reproduce} from a ``check --json`` report."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise CheckFileError(f"check report not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckFileError(f"cannot read the check report {path}: {e}") from None
    models = doc.get("models") if isinstance(doc, dict) else None
    if not isinstance(models, list):
        raise CheckFileError(f"{path} is not a `gradcheck-suite check --json` report (no 'models' list)")
    found = {}
    for m in models:
        if isinstance(m, Mapping) and {"name", "dtype", "device", "verdict"} <= set(m):
            found[(m["name"], m["dtype"], m["device"])] = {
                "verdict": m["verdict"], "source": f"check report {path}", "reproduce": m.get("reproduce")}
    return found


def lookup(found: Mapping[tuple[str, str, str], dict], model: str, dtype: str, device: str) -> dict:
    """The verdict of one row from a check report; a row the report lacks is "not checked"."""
    return found.get((model, dtype, device)) or {"verdict": NOT_CHECKED, "source": "absent from the check report",
                                                "reproduce": None}
