"""The size-sweep plot: one panel per swept model, time against size, manual and
autograd each as a median line inside its interquartile band (needs matplotlib, the
``plot`` extra)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .rows import Row

PLOT_NAME = "sweep.png"
COLORS = {"manual": "tab:blue", "autograd": "tab:orange"}
LABELS = {"manual": "hand-written backward", "autograd": "torch autograd"}
BAND = "band: middle 50% of rounds"


def plot_sweep(series: Mapping[str, Sequence[Row]], out: Path) -> Path:
    """Draw every model of ``series`` (model -> rows by growing size) into one PNG.

    Raises ImportError without matplotlib.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4), squeeze=False, constrained_layout=True)
    for ax, (model, rows) in zip(axes[0], series.items()):
        use_flops = all(r.flops for r in rows)
        x = [r.flops if use_flops else r.factor for r in rows]
        for impl in ("manual", "autograd"):
            s = [getattr(r, impl) for r in rows]
            ax.fill_between(x, [v.q1 for v in s], [v.q3 for v in s], color=COLORS[impl], alpha=0.25, lw=0)
            ax.plot(x, [v.median for v in s], "o-", color=COLORS[impl], ms=3, label=f"{LABELS[impl]} (median; {BAND})")
        bench = [xi for xi, r in zip(x, rows) if r.factor == 1]
        if bench:
            ax.axvline(bench[0], color="0.6", ls=":", lw=1, label="benchmark size (the grid's row)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("FLOPs of forward+backward" if use_flops else "each dimension × factor of the benchmark size")
        ax.set_ylabel("seconds per forward+backward")
        first = rows[0]
        ax.set_title(f"{model} ({first.device} {first.dtype}, {first.threads} thread"
                     f"{'' if first.threads == 1 else 's'})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    path = out / PLOT_NAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
