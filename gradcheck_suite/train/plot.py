"""``train.png``: per model, the loss per step of the three runs (log scale), with the band
two correct gradients stay inside, and how far the manual run is from autograd against
the envelope; the parting step is marked.  Needs matplotlib (the ``plot`` extra)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..verdict import rules

COLORS = {"manual": "tab:blue", "autograd": "tab:orange", "float64": "0.35"}
LABELS = {"manual": "manual gradient", "autograd": "autograd", "float64": "autograd, float64"}


def _finite(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None or not math.isfinite(v) else v for v in values]


def plot(results: Sequence, path: str) -> str | None:
    """One row per model: losses on the left, distance and envelope on the right."""
    if not results:
        return None
    import matplotlib.pyplot as plt

    margin = rules.TRAIN_MARGIN

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.6 * len(results)), squeeze=False,
                             constrained_layout=True)
    for (left, right), r in zip(axes, results):
        steps = list(range(1, len(r.losses["manual"]) + 1))
        auto = _finite(r.losses["autograd"])
        scale, band_low, band_high = 0.0, [], []
        for s, ref in zip(steps, _finite(r.losses["float64"])):
            if math.isfinite(ref):
                scale = max(scale, abs(ref))
            # the envelope is relative to the largest loss so far: the same band around autograd's loss
            half = r.envelope[s - 1] * scale if r.envelope[s - 1] is not None else math.nan
            band_low.append(auto[s - 1] - half)
            band_high.append(auto[s - 1] + half)
        low = [max(v, rules.TRAIN_TINY) if math.isfinite(v) else math.nan for v in band_low]
        left.fill_between(steps, low, band_high,
                          color=COLORS["autograd"], alpha=0.2, lw=0,
                          label=f"envelope × {margin:g} around autograd")
        for key in ("float64", "autograd", "manual"):
            left.plot(steps, _finite(r.losses[key]), color=COLORS[key], lw=1.4 if key == "manual" else 1.0,
                      ls="--" if key == "float64" else "-", label=LABELS[key])
        right.plot(steps, _finite(r.distance), color=COLORS["manual"], lw=1.2, label="manual from autograd")
        right.plot(steps, _finite([None if e is None else e / margin for e in r.envelope]), color="0.5", lw=1,
                   ls=":", label="drift of two correct gradients")
        right.plot(steps, _finite(r.envelope), color="tab:red", lw=1, ls="--", label=f"parting line (× {margin:g})")
        for ax in (left, right):
            for at, what, color in ((r.parted_at, "parts", "tab:red"), (r.diverged_at, "autograd diverges", "k")):
                if at is not None:
                    ax.axvline(at, color=color, ls="-.", lw=1, label=f"{what} (step {at})")
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.grid(True, which="major", alpha=0.3)
        left.set_ylabel("loss")
        right.set_ylabel("relative distance")
        lr = "-" if r.lr is None else f"{r.lr:.3g}"
        left.set_title(f"{r.name} · {r.dtype} · {r.optimizer} lr {lr} · {r.batch} batch: {r.verdict}", fontsize=10)
        right.set_title("distance from autograd (loss and parameters)", fontsize=10)
        left.legend(fontsize=7, loc="best")
        right.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
