"""``gradcheck-suite merge REPORT...``: the JSON reports of the N parts of a run split with
``check --shard K/N`` joined into one report, one table and one exit code.

The reports must be the N parts of one run: the same N, every K once, the same selection,
profile, options and torch, and their models the selection, each once.  Where they are not,
one line says what is missing, given twice or different, the merged report covers the parts
given, and the exit code is 3.  Otherwise the exit code is what ``check`` would have returned
for the whole run: each part's code is check's over its models and over the problems every
part shares (a model file that did not load, a bad option), so the whole run's code is the
gravest of the parts' (130, then 2, then 1).
"""
from __future__ import annotations

import argparse
import json
import math
import textwrap
from types import SimpleNamespace

from ..verdict import rules
from .outcome import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, unwritable

#: the fields of a part's ``shard`` that must be the same in every part of one run
_SAME = ("selection", "profile", "options")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "merge", help="join the JSON reports of the N parts of a run split with check --shard K/N into one "
                      "report and one exit code",
        description="Join the JSON reports of the N parts of one run (gradcheck-suite check --shard K/N --json "
                    "REPORT) into one report, one table and one exit code.",
        epilog="Exit codes: what check would have returned for the whole run (0 every model passed, 1 a model "
               "failed or errored, 2 a usage error in a part, 130 a part interrupted); 3 the reports are not the "
               "N parts of one run (a part missing or given twice, parts of different runs); 2 a report that is "
               "missing, not JSON or not a part's.")
    p.add_argument("reports", nargs="+", metavar="REPORT",
                   help="the JSON report of each part (check --shard K/N --json REPORT), in any order")
    p.add_argument("--json", metavar="FILE",
                   help="also write the merged JSON report to FILE; '-' writes it to stdout and the rest to stderr")
    p.add_argument("--markdown", metavar="FILE",
                   help="also write the merged table and failures as Markdown to FILE (e.g. $GITHUB_STEP_SUMMARY)")
    return p


def run(rep, args) -> None:
    """Read the parts, check that they are one run, and print and record the merged run."""
    if args.markdown and unwritable(args.markdown, "--markdown"):
        rep.usage_error(unwritable(args.markdown, "--markdown"))
        return
    parts = [(path, _read(rep, path)) for path in args.reports]
    if rep.usage:             # a report that cannot be read: nothing to merge
        return
    kept = _check(rep, parts)
    docs = [doc for _, doc in kept]
    head = docs[0]["shard"]
    order = {name: i for i, name in enumerate(head["selection"])}
    models = sorted((m for doc in docs for m in doc["models"]),
                    key=lambda m: order.get(m.get("name"), len(order)))      # stable: a model's rows keep their order
    problems = list(dict.fromkeys(p for doc in docs for p in doc.get("problems", [])))
    model_errors = {p for doc in docs for p in doc["shard"].get("model_errors", [])}
    for text in problems:      # as the parts said them
        rep.err.write(f"gradcheck-suite: {'model error' if text in model_errors else 'error'}: {text}")
    codes = [doc.get("exit_code") for doc in docs]
    rep.problems += problems
    rep.interrupted = rep.interrupted or EXIT_INTERRUPTED in codes or any(doc.get("interrupted") for doc in docs)
    rep.usage = rep.usage or EXIT_USAGE in codes
    if EXIT_FAILED in codes or any(m.get("verdict") != "pass" for m in models):
        rep.errors += 1
    rep.isolated = all(doc.get("isolated") for doc in docs)
    rep.listed = models
    of = head["of"]
    given = sorted({doc["shard"]["part"] for doc in docs})
    rep.fields = {"torch": docs[0].get("torch"),
                  "merged": {"of": of, "parts": given, "missing": [k for k in range(1, of + 1) if k not in given],
                             "complete": not rep.incomplete, "reports": [path for path, _ in kept],
                             **{key: head.get(key) for key in _SAME}}}
    text = _table(models)
    rep.out.write(text)
    line = _summary(models, problems, model_errors, rep)
    rep.out.write(f"\n{line}")
    if args.markdown:
        _markdown(rep, args.markdown, models, line, of, given)


def _read(rep, path: str) -> dict | None:
    """One part's report, or None with its one-line problem."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        rep.usage_error(f"{path}: no such file")
        return None
    except (OSError, ValueError) as e:
        rep.usage_error(f"{path}: not a JSON report ({e})")
        return None
    shard = doc.get("shard") if isinstance(doc, dict) else None
    if not isinstance(shard, dict):
        if isinstance(doc, dict) and doc.get("exit_code") == EXIT_USAGE and doc.get("problems"):
            rep.usage_error(f"{path}: the part stopped on a usage error before choosing its models: "
                            f"{doc['problems'][0]}")
        else:
            rep.usage_error(f"{path}: not the report of a part: it has no \"shard\" (write each part with "
                            "gradcheck-suite check --shard K/N --json FILE)")
        return None
    ok = (isinstance(shard.get("part"), int) and isinstance(shard.get("of"), int)
          and 1 <= shard["part"] <= shard["of"] and isinstance(shard.get("selection"), list)
          and isinstance(shard.get("models"), list) and isinstance(doc.get("models"), list)
          and all(isinstance(m, dict) for m in doc["models"]))
    if not ok:
        rep.usage_error(f"{path}: its \"shard\" or \"models\" is not what gradcheck-suite check --shard writes")
        return None
    return doc


def _check(rep, parts: list) -> list:
    """The parts to merge (each K once, the first report given for it); where they are not
    the N parts of one run, one line for each way they are not, and ``rep.incomplete``."""
    lines = []
    path0, doc0 = parts[0]
    counts = sorted({doc["shard"]["of"] for _, doc in parts})
    if len(counts) > 1:
        lines.append("parts of different runs: split into " + " and ".join(
            f"{n} parts ({', '.join(p for p, d in parts if d['shard']['of'] == n)})" for n in counts))
    for key in ("torch",):
        values = list(dict.fromkeys(json.dumps(doc.get(key)) for _, doc in parts))
        if len(values) > 1:
            lines.append(f"parts of different runs: {key} differs: " + "; ".join(
                f"{v} in {', '.join(p for p, d in parts if json.dumps(d.get(key)) == v)}" for v in values))
    for key in _SAME:
        shown = {path: _same_form(key, doc["shard"].get(key)) for path, doc in parts}
        values = list(dict.fromkeys(shown.values()))
        if len(values) > 1:
            lines.append(f"parts of different runs: the {key} differs: " + "; ".join(
                f"{', '.join(p for p, v2 in shown.items() if v2 == v)} has {_short(v)}" for v in values))
    of = doc0["shard"]["of"]
    by_part: dict[int, list[str]] = {}
    for path, doc in parts:
        by_part.setdefault(doc["shard"]["part"], []).append(path)
    missing = [k for k in range(1, of + 1) if k not in by_part]
    twice = {k: paths for k, paths in sorted(by_part.items()) if len(paths) > 1}
    if not lines and (missing or twice):
        said = []
        if missing:
            said.append(f"missing: {', '.join(f'part {k}/{of}' for k in missing)}")
        if twice:
            said.append("given more than once: " + "; ".join(f"part {k}/{of} ({', '.join(p)})" for k, p in twice.items()))
        lines.append(f"incomplete merge: {len(by_part)} of {of} parts; {'; '.join(said)}")
    kept = [next((p, d) for p, d in parts if d["shard"]["part"] == k) for k in sorted(by_part)]
    if not lines:           # one run: its parts hold the selection, each model once
        where: dict[str, list[int]] = {}
        for _, doc in kept:
            for name in doc["shard"]["models"]:
                where.setdefault(name, []).append(doc["shard"]["part"])
        selection = doc0["shard"]["selection"]
        twice_m = {n: ks for n, ks in where.items() if len(ks) > 1}
        lost = [n for n in selection if n not in where]
        extra = [n for n in where if n not in selection]
        if twice_m or lost or extra:
            said = [f"{n} in parts {', '.join(map(str, ks))}" for n, ks in twice_m.items()]
            said += [f"{', '.join(lost)} in no part"] if lost else []
            said += [f"{', '.join(extra)} not in the selection"] if extra else []
            lines.append(f"the parts do not split one selection (split by another gradcheck-suite version?): "
                         f"{'; '.join(said)}")
    for line in lines:
        rep.err.write(f"gradcheck-suite: error: {line}")
        rep.problems.append(line)
    rep.incomplete = bool(lines)
    return kept


def _same_form(key: str, value) -> str:
    """A part's ``key`` in the form the parts are compared in: the selection as a set (model
    files given in another order select the same models, and the split does not read the order)."""
    if key == "selection" and isinstance(value, list):
        value = sorted(map(str, value))
    return json.dumps(value, sort_keys=True)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _table(models: list) -> str:
    """The table ``check`` prints, from the reports' rows, then the details it prints after it."""
    from ..run import report
    runs = [_as_run(m) for m in models]
    table = report.Table([r.model for r in runs], [r.dtype for r in runs], [r.device for r in runs])
    lines = [table.head(), *(table.row(r) for r in runs)]
    for m, r in zip(models, runs):
        if r.verdict != "pass" or m.get("notes"):
            lines.append("\n" + _details(m))
        elif report.aside_details(r):
            lines.append("\n" + report.aside_details(r))
    return "\n".join(lines)


def _as_run(m: dict) -> SimpleNamespace:
    """A report's row as the table reads a run: what ``run_json`` wrote, read back."""
    counts = m.get("counts", {})
    worst = m.get("worst_over_tolerance", {})
    oracles = m.get("oracles", ["autograd", "finite_diff"])
    checked = counts.get("checked", 0)
    failure = m.get("failure")
    if failure is not None:
        failure = SimpleNamespace(
            tensors={n: SimpleNamespace(max_ratio=p.get("max_over_tolerance", 0.0))
                     for n, p in failure.get("parameters", {}).items()},
            fd_ratio=failure.get("over_tolerance", {}).get("finite_diff"))
    return SimpleNamespace(
        model=m.get("name", "?"), dtype=m.get("dtype", "?"), device=m.get("device", "?"), verdict=m.get("verdict", "error"),
        checked=checked, nondiff=counts.get("non_differentiable", 0), skipped=counts.get("skipped", 0),
        scales=m.get("coverage", {}).get("scales", []), two_way=oracles == ["finite_diff"],
        fd_missing=checked if oracles == ["autograd"] else 0,
        worst_autograd_ratio=worst.get("autograd") or 0.0, worst_fd_ratio=worst.get("finite_diff") or 0.0,
        failure=failure, seconds=m.get("seconds", 0.0),
        aside={a["reason"]: (a["count"], a["example"], a["scales"]) for a in m.get("aside", [])})


def _details(m: dict) -> str:
    """What ``check`` prints after the table for a model that did not pass or has notes: its
    problems, its notes, and the failing case's message."""
    name = m.get("name", "?")
    failure = m.get("failure")
    shown = failure.get("notes", []) if failure is not None and failure.get("verdict") == "fail" else []
    texts = [f"{name}: {p}" for p in m.get("problems", [])]
    texts += [f"{name}: note: {n}" for n in m.get("notes", []) if not any(n.startswith(s) for s in shown)]
    parts = ["\n".join(textwrap.wrap(t, rules.WIDTH, subsequent_indent="    ", break_long_words=False,
                                     break_on_hyphens=False)) for t in texts]
    if failure is not None:
        parts.append(failure.get("message", ""))
    return "\n".join(parts)


def _summary(models: list, problems: list, model_errors: set, rep) -> str:
    """check's summary line for the whole run: its models' verdicts, the model files that did
    not load and the usage errors, each problem once."""
    counts = {v: sum(m.get("verdict") == v for m in models) for v in ("pass", "fail", "error")}
    parts = [f"{counts['pass']} passed", f"{counts['fail']} failed"]
    errors = counts["error"] + sum(p in model_errors for p in problems)
    usage = sum(p not in model_errors for p in problems)
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if usage:
        parts.append(f"{usage} usage error{'s' * (usage != 1)}")
    if rep.incomplete:
        parts.append("incomplete: not every part of the run")
    return ", ".join(parts)


def _markdown(rep, path: str, models: list, line: str, of: int, given: list) -> None:
    """The merged run for a CI summary page: the summary, a table, each failure's message."""
    def cell(x) -> str:
        return str(x).replace("|", "\\|")

    out = [f"## gradcheck-suite: {len(given)} of {of} part{'s' * (of != 1)} merged", "",
           f"**{line}** (exit code {rep.exit_code()})", "",
           "| model | dtype | device | cases | aside | verdict | seconds |", "|---|---|---|--:|--:|---|--:|"]
    for m in models:
        counts = m.get("counts", {})
        seconds = m.get("seconds", 0.0)
        out.append("| " + " | ".join(cell(x) for x in (
            m.get("name"), m.get("dtype"), m.get("device"), counts.get("checked", 0),
            counts.get("non_differentiable", 0) + counts.get("skipped", 0),
            m.get("verdict", "error") if m.get("verdict") == "pass" else f"**{m.get('verdict', 'error').upper()}**",
            f"{seconds:.2f}" if isinstance(seconds, (int, float)) and math.isfinite(seconds) else "-")) + " |")
    for m in models:
        if m.get("verdict") != "pass":
            out += ["", f"### {cell(m.get('name'))} ({m.get('dtype')}, {m.get('device')})", "", "```", _details(m), "```"]
    if rep.problems:
        out += ["", "### Problems", "", *(f"- {cell(p)}" for p in rep.problems)]
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
    except OSError as e:
        rep.err.write(f"gradcheck-suite: error: cannot write the Markdown report: {e}")
