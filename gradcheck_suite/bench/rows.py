"""Reading a benchmark run: pytest-benchmark's JSON, the rows this suite wrote into it."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Mapping
from functools import cached_property

from . import calibration
from . import stats
from .verdicts import NOT_CHECKED, PASS

#: a row's table (``table`` in its ``extra_info``): the grid of models, devices and dtypes, or the size sweep
GRID, SWEEP = "grid", "sweep"


class BenchInputError(Exception):
    """Bad input to the command: reported as one line, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One benchmark: a model at fixed dims on one device and dtype, manual against
    autograd (and a matmul of its shape) timed in the same rounds."""

    name: str
    table: str             # GRID or SWEEP: the table of the report the row belongs to
    model: str
    device: str
    dtype: str
    phase: str
    dims: dict
    factor: float | None
    flops: int | None
    threads: int | None
    check: dict
    visits: list           # one {side: seconds per call, one per round} per visit
    matmul: dict | None    # {"shape": [m, k, n], "flops": ...}
    memory: dict | None = None   # {"manual": {"kept", "peak"}, "autograd": {...}, "peak_method"} or {"error"}
    world_size: int | None = None    # a sharded record's ranks (None: one process)
    per_rank: list | None = None     # a sharded row, by visit: [{side: [seconds per call, per round]} of each rank]
    na: str | None = None            # why the row has no autograd side (a sharded forward that communicates)
    autograd_side: str | None = None   # what a sharded row's autograd side is

    @property
    def has_memory(self) -> bool:
        return bool(self.memory) and "manual" in self.memory and "autograd" in self.memory

    def memory_of(self, side: str, what: str) -> int | None:
        """Bytes ``side`` kept for its backward (``what="kept"``) or its peak (``"peak"``)."""
        if not self.has_memory:
            return None
        value = (self.memory.get(side) or {}).get(what)
        return int(value) if isinstance(value, (int, float)) else None

    def memory_ratio(self, what: str) -> float | None:
        """manual / autograd bytes; None where either is missing or autograd's is 0."""
        m, a = self.memory_of("manual", what), self.memory_of("autograd", what)
        if m is None or a is None or a == 0:
            return None
        return m / a

    def rank_medians(self, side: str) -> list[float]:
        """A sharded row: each rank's median seconds per call of ``side``, over the rounds of all its
        visits (as the row's own median is); [] otherwise."""
        visits = [v for v in self.per_rank or [] if v and all(isinstance(r.get(side), list) for r in v)]
        if not visits:
            return []
        return [float(statistics.median([t for v in visits if r < len(v) for t in v[r][side]]))
                for r in range(len(visits[0]))]

    def pooled(self, side: str) -> list[float]:
        return [t for v in self.visits for t in v.get(side, [])]

    @property
    def key(self) -> tuple:
        """What identifies a row across runs: a sharded row compares with the same world size only."""
        return (self.table, self.model, self.device, self.dtype, self.phase, self.factor, self.world_size)

    @property
    def verdict(self) -> str:
        return self.check.get("verdict", NOT_CHECKED)

    @cached_property
    def manual(self) -> stats.Summary:
        return stats.summary(self.pooled("manual"))

    @cached_property
    def autograd(self) -> stats.Summary:
        if self.na:
            return stats.Summary(math.nan, math.nan, math.nan, 0)
        return stats.summary(self.pooled("autograd"))

    @cached_property
    def ratios(self) -> list[list[float]]:
        """manual/autograd of each full rotation of the rounds, by visit: above 1, the
        hand-written backward is slower."""
        return [paired_ratios(v) for v in self.visits]

    @property
    def rounds(self) -> int:
        return sum(len(v.get("manual", [])) for v in self.visits)

    @cached_property
    def ratio(self) -> stats.Interval:
        if self.na:
            return stats.Interval(math.nan, math.nan, math.nan)
        return stats.median_interval(self.ratios)

    def fraction(self, impl: str) -> float | None:
        """The model's FLOP rate over the rate of the matmul timed in the same rounds."""
        per_cycle = [r for v in self.visits if v.get("matmul") for r in paired_ratios(v, "matmul", impl)]
        return calibration.fraction(self.flops, (self.matmul or {}).get("flops"), per_cycle)

    @property
    def faster(self) -> str:
        """Which side is faster, only where the check passed and the interval excludes 1."""
        if self.na:
            return "n/a: no autograd side"
        if self.verdict != PASS:
            return f"none: check {self.verdict}"
        if self.ratio.high < 1:
            return "manual"
        if self.ratio.low > 1:
            return "autograd"
        return "no clear difference"


def paired_ratios(samples: Mapping[str, list], a: str = "manual", b: str = "autograd") -> list[float]:
    """a/b over each full rotation of one visit's rounds.

    The order of the sides rotates from round to round (A B C, B C A, C A B), and a side
    runs faster after another has warmed the cache with the same tensors: per round, the
    ratio takes two or three values by position (mlp_relu's backward: 0.61 with manual
    first, 0.72 with autograd first), and the median of such a mixture jumps between them
    from visit to visit.  Over a full rotation every side has held every position once, so
    the position's advantage cancels: the ratio of the sums over each rotation is the
    sample.  A visit shorter than one rotation gives its per-round ratios.
    """
    first, second = samples.get(a) or [], samples.get(b) or []
    sides = sum(1 for v in samples.values() if isinstance(v, list) and v)
    n = min(len(first), len(second)) // max(1, sides) * sides
    if n == 0:
        return [x / y for x, y in zip(first, second) if y > 0]
    out = []
    for i in range(0, n, sides):
        below = sum(second[i:i + sides])
        if below > 0:
            out.append(sum(first[i:i + sides]) / below)
    return out


def load_run(path: str | os.PathLike, what: str = "benchmark file") -> dict:
    """A pytest-benchmark JSON file, checked enough to report on; BenchInputError if not."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise BenchInputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise BenchInputError(f"{what} {path} is a folder; give its {JSON_NAME}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BenchInputError(f"cannot read {what} {path}: {getattr(e, 'strerror', None) or e}") from None
    except json.JSONDecodeError as e:
        raise BenchInputError(f"{what} {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise BenchInputError(f"{what} {path} is not a pytest-benchmark JSON (no 'benchmarks' list)")
    return data


JSON_NAME = "benchmarks.json"


def rows(run: Mapping) -> list[Row]:
    """The rows of a run that carry paired samples, the visits to one row merged into one
    (others' benchmarks are left out)."""
    out: dict[tuple, Row] = {}
    for b in run.get("benchmarks", []):
        info = b.get("extra_info") or {}
        samples = info.get("samples")
        table = info.get("table", info.get("kind"))    # "kind": the key older versions wrote
        if table not in (GRID, SWEEP) or not isinstance(samples, dict):
            continue
        na = info.get("autograd_na") or None
        if not samples.get("manual") or not (samples.get("autograd") or na):
            continue
        row = Row(name=b.get("name", ""), table=table, model=info.get("model", "?"),
                  device=info.get("device", "cpu"), dtype=info.get("dtype", "?"), phase=info.get("phase", "?"),
                  dims=info.get("dims") or {}, factor=info.get("factor"), flops=info.get("flops"),
                  threads=info.get("threads"), check=info.get("check") or {}, visits=[samples],
                  matmul=info.get("matmul"), memory=info.get("memory"), world_size=info.get("world_size"),
                  per_rank=[info["per_rank"]] if info.get("per_rank") else None, na=na, autograd_side=info.get("autograd_side"))
        if row.key in out:
            out[row.key].visits.append(samples)
            if row.per_rank and out[row.key].per_rank is not None:
                out[row.key].per_rank.extend(row.per_rank)
            if row.memory and not out[row.key].memory:
                out[row.key] = dataclasses.replace(out[row.key], memory=row.memory)
        else:
            out[row.key] = row
    return list(out.values())


def machine(run: Mapping) -> dict:
    """What identifies the machine and setup a run was timed on."""
    m = run.get("machine_info") or {}
    cpu = m.get("cpu") or {}
    return {"node": m.get("node"), "cpu": (cpu.get("brand_raw") if isinstance(cpu, dict) else cpu) or m.get("processor"),
            "cores": m.get("cpu_count"), "gpu": m.get("gpu"), "torch": m.get("torch_version"),
            "threads": m.get("torch_threads")}
