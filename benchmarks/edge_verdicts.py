"""Verdicts at the edges, case by case, for a change to a verdict rule.

Correct models: every built-in and trust model (``tests/models/verdict_trust.py``) in
float64, float32 and float16, at scales 1e-3, 1 and 1e3, every dim at its low end (size 1
for most) and high (at most 8), seeds 0 and 1: each must pass or be set aside, never fail.
Wrong twins: the built-in models and three trust models (a softmax, a saturated LSTM, a log
of a sum) with one element of one gradient, its largest, off by 1e-5 relative in float64 and
1e-3 in float32, at the same scales, dims low and mid: each must fail naming that tensor
(or be set aside where the forward overflows).

    python benchmarks/edge_verdicts.py --json now.json
    python benchmarks/edge_verdicts.py --json now.json --against then.json   # the cases that changed

Run it on two commits (each from its own checkout) and compare with ``--against``: a rule
change should move no correct case to fail and no wrong case to pass.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

import gradcheck_suite  # noqa: E402
from gradcheck_suite import Case, check_case, load  # noqa: E402
from tests.models import verdict_trust as vt  # noqa: E402

SCALES = (1e-3, 1.0, 1e3)


def _verdict(model, case) -> str:
    try:
        r = check_case(model, case)
    except Exception as e:                     # the harness's own failure: never expected
        return f"exception {type(e).__name__}"
    return r.verdict + (":" + ",".join(r.failing) if r.verdict == "fail" else "")


def correct(models) -> dict[str, str]:
    out = {}
    for m in models:
        for dtype in ("float64", "float32", "float16"):
            for scale in SCALES:
                for corner in ("low", "high"):
                    dims = {k: (d.low if corner == "low" else min(d.high, 8)) for k, d in m.dims.items()}
                    for seed in (0, 1):
                        out[f"{m.name} {dtype} {scale:g} {corner} {seed}"] = _verdict(
                            m, Case(m.name, dims, dtype, "cpu", seed, scale))
    return out


def _off(model, tensor: str, rel: float):
    def backward(p, d, c, g):
        grads = dict(model.backward(p, d, c, g))
        x = grads[tensor].clone()
        flat = x.reshape(-1)
        i = int(flat.abs().argmax())
        flat[i] = flat[i] * (1 + rel)
        grads[tensor] = x
        return grads
    return dataclasses.replace(model, backward=backward)


def wrong(models) -> dict[str, str]:
    out = {}
    for m in models:
        for dtype, rel in (("float64", 1e-5), ("float32", 1e-3)):
            for scale in SCALES:
                for corner in ("low", "mid"):
                    dims = {k: (d.low if corner == "low" else min(d.high, 5)) for k, d in m.dims.items()}
                    for tensor in m.differentiable:
                        out[f"{m.name} {tensor} {dtype} {scale:g} {corner}"] = _verdict(
                            _off(m, tensor, rel), Case(m.name, dims, dtype, "cpu", 0, scale))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the verdicts here")
    ap.add_argument("--against", help="an earlier --json: print the cases whose verdict changed")
    args = ap.parse_args()
    torch.set_num_threads(1)
    reg = load()
    builtin = [reg.get(n) for n in reg.names()]
    trust = [getattr(vt, n) for n in dir(vt) if isinstance(getattr(vt, n), gradcheck_suite.Model)]
    result = {"correct": correct(builtin + trust),
              "wrong": wrong(builtin + [vt.SOFTMAX_DOT, vt.SATURATED_LSTM, vt.LOG_SUM])}
    bad = 0
    for part, cases in result.items():
        counts = collections.Counter(v.split(":")[0] for v in cases.values())
        print(f"{part}: {len(cases)} cases: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
        for key, v in cases.items():
            named = key.split()[1]
            if (part == "correct" and v.split(":")[0] not in ("pass", "skipped", "non-differentiable")) or \
                    (part == "wrong" and v.split(":")[0] != "skipped" and v != f"fail:{named}"):
                print(f"  {key}: {v}")
                bad += 1
    if args.against:
        with open(args.against) as f:
            then = json.load(f)
        for part in result:
            changed = [(k, then[part].get(k), v) for k, v in result[part].items() if then[part].get(k) != v]
            print(f"{part}: {len(changed)} of {len(result[part])} cases changed verdict")
            for k, a, b in changed:
                print(f"  {k}: {a} -> {b}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
