"""Every tuned number of the verdicts, the runs, training and the benchmark gate, on one page.

Each is named once, here, with a ``#:`` comment giving its reason; the code reads it as
``rules.NAME`` (so that a test can patch it in one place).  ``docs/rules.md`` tables them, and
``tests/test_rules.py`` checks that table against this module.  Stdlib only: the pytest
plugin imports this module at start-up.
"""
from __future__ import annotations

import sys

# --- tolerance: how close two gradients must be (verdict/tolerance.py) ---

#: float64's resolution (``torch.finfo(torch.float64).eps``, which is Python's own float).
EPS64 = sys.float_info.epsilon
#: The smallest normal float64 (``torch.finfo(torch.float64).tiny``): a divisor or a bound is
#: never taken below it.
TINY = sys.float_info.min
#: How many times over a measured rounding is allowed (the ``noise`` of every dtype in
#: ``TOLERANCES``), and the allowance in ``COMPUTATION_RTOL``.
NOISE = 8.0
#: The table, per dtype: ``abs(manual - reference) <= rtol * abs(reference) + max(atol *
#: max(abs(reference)), noise * rounding, computation)`` (see ``tolerance.Tolerance``).  In float64 a relative error of 1e-5 in any
#: element at least 1e-3 of its tensor's largest is far outside the bound, while rounding
#: (~1e-16 * terms) is far inside.  complex64 and complex128 take float32's and float64's row
#: (their parts' dtype), with ``abs(reference)`` the modulus of z (``tolerance.real_dtype``).
TOLERANCES = {
    "float64": dict(rtol=1e-7, atol=1e-10, noise=NOISE),
    "float32": dict(rtol=2e-5, atol=1e-5, noise=NOISE),
    "float16": dict(rtol=4e-3, atol=2e-3, noise=NOISE),
    "bfloat16": dict(rtol=3e-2, atol=1.6e-2, noise=NOISE),
}
#: A difference below this fraction of the computation's scale is rounding, in any dtype:
#: float64's resolution, with the same allowance (``NOISE``) as a measured rounding.
COMPUTATION_RTOL = NOISE * EPS64
#: The measured jitter is allowed up to this fraction of an element: a float64 reference
#: inexact by 1e-7, or by 1e-4 where a sigmoid saturates, passes a correct backward; the jump
#: of a kink or a tie that the jitter crosses (of the order of the element) stays outside.
#: Where autograd is well conditioned its jitter is ~1e-16 of the element, so a 1e-5 error
#: there still fails.
JITTER_CAP = 1e-2
#: The measured jitter is a few draws of a pseudo-random rounding, and now and then all of
#: them come out well below its size (a saturated LSTM at 1/8.5 of it, a softmax at 1/8.3),
#: so it is allowed 16 times over, twice a measured rounding's ``NOISE``.
JITTER_NOISE = 16.0
#: Relative errors are reported against max(abs(reference), REL_FLOOR * max(abs(reference))); at
#: higher orders, an element's own rate is read only where its term is at least this of the largest.
REL_FLOOR = 1e-3
#: The worst elements a mismatched tensor's report lists.
WORST = 5
#: Ratios, relative errors and scores are capped here, so that reports (and hypothesis's
#: target) stay finite.
HUGE = 1e300

# --- oracles: autograd and finite differences (verdict/oracles.py) ---

#: Steps relative to each tensor's typical magnitude.  The first is where Richardson's
#: truncation (~h^4) and rounding (~eps/h) errors are both near 1e-12; the larger one helps
#: where rounding dominates (a large loss, a small slope); the smaller ones are tried when a
#: kink sits inside the first step.
STEPS = (1e-4, 1e-2, 1e-6, 1e-8)
#: The order for a random direction where the manual gradient and autograd already agree in
#: every element, so the probe asks only whether autograd is the derivative: the narrow step
#: first, because a wide one moves many ReLU-like units across their kinks when the tensors
#: are large (a 256x4000 -> 400 layer crosses ~8 at 1e-4).  Any step that agrees settles such
#: a probe, so only the number of forward calls depends on it.
AGREED_STEPS = (1e-6, 1e-4, 1e-2, 1e-8)
#: Forward rounding is taken as ROUNDING * eps * (its first-order bound, see ``Traced``).
ROUNDING = 64.0
#: One-sided gap at h/2 over gap at h: ~0.5 when smooth, ~1 at a kink; above this, a kink.
KINK_RATIO = 0.7
#: A one-sided gap below this fraction of the slope is smooth, whatever the ratio.
KINK_FLOOR = 1e-7
#: The relative step to either side of an element at which autograd looks for a kink that
#: finite differences cannot resolve: autograd needs no step to resolve a slope, so it can
#: be one that no other kink is likely to fall within.
JUMP = 1e-10
#: An agreement this precise (relative) settles a probe where manual and autograd agree.
ENOUGH = 1e-3
#: A finite-difference estimate agrees with a gradient within this many times its own error,
#: plus the tolerance (``Estimate.agrees``); the central difference alone (``central``), the
#: figure reported for a probe (``check/measure.py``, ``fd_ratio``) and a probed element where
#: finite differences are the only oracle (``check/stages/fd_only.py``) use the same allowance,
#: so that none accepts or reports anything the full estimate would judge otherwise.
ESTIMATE_ERRORS = 8.0
#: Independent draws of the rounding errors in ``backward_rounding``, the largest kept per
#: element (six leave an element below half its spread once in 300): one draw can all but
#: cancel where two steps carry equal terms (a product, then a division by a constant).
DRAWS = 6

# --- the check's stages (check/) ---

#: Tensors with at most this many elements get a finite difference for every element.
SMALL_TENSOR = 16

#: Backward calls on one case of an ``op_model`` record (the repeated-calls stage): one more
#: than a plain record's 2, as an op's backward may keep state on its ctx or its class that
#: shows only on the third call.
OP_BACKWARD_RUNS = 3

#: Random directions per case (every element is compared with autograd anyway).
PROBES = 1

#: Mismatched elements examined with finite differences, per tensor; also the elements drawn
#: at random where a direction sees a kink, and the worst elements probed of a tensor that
#: passed only thanks to the measured jitter.
EXAMINE = 5

#: A finite-difference estimate this close (relative) needs no other step.
PRECISE = 1e-6

#: A float64 forward farther than this from the float64 reference (its largest difference,
#: relative to the reference's largest element) computes inside in a lower precision (a
#: ``.float()``, a float32 accumulation): finite differences then take that difference as
#: the forward's noise floor.  float32 rounds at ~6e-8; a float64 forward, even a
#: cancelling one, stays below 1e-12 (so every float64-precise forward keeps its floor).
FORWARD_COARSE = 1e-10

#: Relative size of the jitter that measures rounding in float64: large enough to move the
#: rounding of a sigmoid saturated to 1e-13.
JITTER = 1e-4

#: Elements per tensor probed one by one where finite differences are the only oracle (numpy
#: code without a reference); the rest are judged together along one random direction.
FD_ONLY_ELEMENTS = 24

#: The default tensor factory keeps values this many scales inside a domain bound.
FACTORY_MARGIN = 0.1

#: A scalar output's upstream gradient is +-(UPSTREAM_LOW + UPSTREAM_WIDTH * u), u uniform on
#: [0, 1): never close to 1, so a backward that ignores its upstream gradient fails.
UPSTREAM_LOW = 1.5
#: See ``UPSTREAM_LOW``.
UPSTREAM_WIDTH = 1.5

#: The one value of an expanded upstream gradient (layouts) where the case's has no finite,
#: nonzero root mean square to take instead.
LAYOUT_FILL = 1.5


#: Members of the batch under vmap (``check/stages/batched.py``): three, so that a backward or
#: a vmap rule that mixes the members, or reads only the first, shows, at the cost of three
#: more backward calls a way.
BATCH = 3

#: Members of the batch in the batched stage's layouts after dim 0 of every input (the batch at
#: the last dim, inputs left unbatched): a vmap rule that reads only dim 0, or takes every input
#: as batched, shows with two (the mixing of members is judged at dim 0, with ``BATCH``); each
#: member more costs a call of the op, and of its backward, per layout.
BATCH_IN_DIMS = 2


# Seed salts: each stage that draws random numbers from a case's seed mixes in its own salt,
# so that its draws are independent of the others' and the same on every run.  Changing a
# salt changes which values (and so which cases) are drawn: every verdict on record may move.
#: The upstream gradient ``g`` of a case (``check/case.py``, ``upstream``).
SALT_UPSTREAM = 0x5EED
#: Which elements of a mismatched tensor finite differences examine beyond the worst ones,
#: and which they probe where a random direction sees a kink.
SALT_EXAMINE = 0xF1D
#: The random directions of the finite-difference probes: direction ``k`` of a case is drawn
#: from ``seed * SALT_PROBES + k`` (a prime multiplier, not an exclusive-or).
SALT_PROBES = 7919
#: The random signs of the small moves that measure the jitter (``check/floor.py``).
SALT_JITTER = 0x717
#: The probes of a check by finite differences alone, without a reference.
SALT_FD_ONLY = 0x2FD
#: The double-backward check's weights ``u`` ...
SALT_DOUBLE = 0xDB
#: ... and its random direction.
SALT_DOUBLE_DIRECTION = 0xDB2
#: The higher orders' weights: ``u_k`` (k >= 2, for order k + 1) from ``(seed ^ SALT_HIGHER) + k``,
#: apart from order 2's ``u_1`` (``SALT_DOUBLE``), so that order 2 draws what it always drew ...
SALT_HIGHER = 0x3D0
#: ... and the random direction of order k (k >= 3) from ``seed ^ (SALT_HIGHER_DIRECTION + k)``.
SALT_HIGHER_DIRECTION = 0x3D20
#: The backend of the compiled stage (``--compile``, a record's ``compile=True``, the nightly
#: profile) where none is named: ``aot_eager`` traces the forward and the backward as
#: training under torch.compile does, at about 0.5-2 s a function on 2 CPU cores; ``inductor``
#: (7-40 s a function) on request.
COMPILE_BACKEND = "aot_eager"
#: The backends ``--compile`` takes.
COMPILE_BACKENDS = ("aot_eager", "inductor")
#: Dynamo's recompiles of one compiled function within a case (dynamo is reset between
#: cases): a case calls each compiled function once, so a handful is already a loop of guard
#: failures, and compiling again costs a second each.
COMPILE_RECOMPILES = 4
#: Seconds added to a case's time limit (``--case-timeout``) when it also runs under
#: torch.compile, per backend: a case compiles one or two functions, ``aot_eager`` in about
#: 0.5-2 s each on 2 idle cores and ``inductor`` in 7-40 s, and a loaded machine takes several
#: times that (an inductor case of mlp_relu ran past 60 s under load 7).  The compiler's time
#: is not the model's: a slow compile must not read as a model that hangs.
COMPILE_TIMEOUT = {"aot_eager": 60.0, "inductor": 600.0}
#: The forward-mode check's tangents ``v`` and weights ``u`` (``check/stages/forward_mode.py``).
SALT_FORWARD_MODE = 0xF0AD
#: The upstream gradients of the backward under vmap (``check/stages/batched.py``), member
#: ``b`` from ``(seed ^ SALT_BATCHED) + b`` ...
SALT_BATCHED = 0xBA7C
#: ... and the further inputs of an op run under ``torch.vmap`` (and their upstream gradients).
SALT_BATCHED_INPUTS = 0xBA7D

# --- drawing cases, running, shrinking and limits (run/) ---

#: Value scales drawn log-uniformly from this range, ends included.
SCALE_RANGE = (1e-3, 1e3)
#: Sizes that catch block-size and power-of-two assumptions, drawn often when in range.
SPECIAL_SIZES = (1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33)
#: The corner schedule's awkward size is neither a power of two nor a multiple of this block
#: size (where block-size assumptions break).
AWKWARD_BLOCK = 8
#: Cases per model of the quick profile (the default for ``pytest`` and ``check``: the same
#: cases every run).
QUICK_CASES = 20
#: Cases per model of the nightly profile: many more, new ones each run, failures replayed
#: from the database.
NIGHTLY_CASES = 400
#: Shapes per model that also run the costly stages a profile or option adds (torch.compile,
#: a custom op's opcheck), each on its shape's first case: both test what a shape decides (the
#: traced graph, fake tensors), at 0.5-2 s a case with aot_eager and 6-13x a check for
#: opcheck, so 400 nightly cases would cost minutes a model; every case runs them once a
#: run has failed, so shrinking sees the failure again.
HEAVY_SHAPES = 20
#: The covering array's next row is chosen from every combination of levels where there are
#: at most this many (3 levels of 6 factors), else from one row grown from each uncovered pair.
COVERING_ALL_ROWS = 729
#: A failing corner case shrinks greedily (scale toward 1, each dim toward its low end, the
#: seed toward 0) for at most this many cases ...
SHRINK_STEPS = 60
#: ... or once it has run this long (the failure found so far is reported), ...
SHRINK_SECONDS = 0.5
#: ... or this many times the failing case's own time, where that is longer: a case that takes
#: seconds (a 4096-wide layer) still gets the all-ones and all-twos corners and a few greedy
#: steps, so that its reproduce command runs the small case; ...
SHRINK_CASES = 6
#: ... capped at this many seconds.
SHRINK_CAP = 60.0
#: The shrink budget counts this process's CPU time per torch thread, not the wall clock: on
#: a machine whose other work holds the cores (a shared CI runner, a test suite under
#: pytest-xdist) the same budget takes the same steps, at any thread count, so where a failure shrinks to does not depend on the load.
#: The wall clock still stops it at SHRINK_WALL times its budget, for work that waits (a GPU).
SHRINK_WALL = 20.0
#: The quick profile's time budget per model (seconds): once the run has used it, no drawn
#: case starts (the corner schedule always runs in full, so its verdict does not depend on the
#: machine's speed).  The seed models run all 20 quick cases in well under a second; a record
#: with fixed dims in the thousands (a 4096x4096 weight) takes seconds a case, and 20 of them
#: would make a per-commit check cost minutes.  An explicit --examples, and the nightly
#: profile, run every case.
QUICK_SECONDS = 30.0
#: The diagnosis of a failure (mistake and line) may take this many times the check's own
#: time so far, ...
DIAGNOSE_SHARE = 1.0
#: ... and at least this many seconds; a step that does not fit is left out and said.
DIAGNOSE_MIN = 10.0
#: A diagnosis still running at this many times its budget is abandoned (no diagnosis, said).
DIAGNOSE_OVERRUN = 2
#: The per-case time limit, seconds (--case-timeout): far above any case at the models' own
#: ranges.
CASE_TIMEOUT = 60.0
#: Torch intra-op threads for the checks: one, so that a busy core does not stall every op of
#: a small case; more cores are better used by checking models in parallel (pytest -n).
THREADS = 1
#: Seconds between progress reports while a case runs.
TICK = 0.2
#: A case holds about this many copies of its tensors (clones, gradients) ...
COPIES = 6
#: ... and this many in float64 (the finite differences and the reference).
COPIES64 = 4
#: The allocator keeps blocks up to 32 MiB on the heap (glibc's ceiling), ...
MALLOC_MMAP_THRESHOLD = 32 << 20
#: ... keeps up to 1 GiB of freed memory, ...
MALLOC_TRIM_THRESHOLD = 1 << 30
#: ... and grows 64 MiB at a time: a case reuses the memory the previous case freed instead
#: of faulting it in again page by page.
MALLOC_TOP_PAD = 64 << 20
#: Under --isolate, seconds the parent waits for a message from a model's process before it
#: looks whether that process has died.
CHILD_POLL = 0.2
#: Seconds between looks, where the OS cannot say so at once, at whether the parent of a
#: model's process (--isolate) is gone.
PARENT_WATCH = 0.5
#: Hypothesis's one-off start-up is done once in the parent (--isolate): the first example
#: is the simplest, the next ones make WARM_DRAWS random draws, one of which surely asks for
#: a constant, which starts hypothesis's scan of the loaded modules.
WARM_EXAMPLES = 3
#: The list each warm-up example draws, of this many integers.
WARM_DRAWS = 100
#: ``--shard K/N`` balances its parts by an estimate of each model's cost: the elements of its
#: largest case plus this many for what a case costs whatever its size.  The built-in models'
#: quick runs took about 0.16 s plus 0.3 ms per element of their largest case (affine_scalar,
#: 34 elements: 0.17 s; mlp_relu, 3744: 1.2 s; 2 cores), so a case's fixed part is worth about
#: 500 elements.  Only the balance of the parts reads it, never a verdict.
SHARD_CASE_ELEMENTS = 500


#: Seconds between heartbeat lines while a model runs and stderr is not a terminal (a CI log):
#: often enough that a long check is never silence, rarely enough not to flood the log
#: (``GRADCHECK_SUITE_HEARTBEAT`` overrides).
HEARTBEAT = 30.0

#: Columns: the tables, messages and progress lines fit a terminal this wide (and a CI log's
#: usual width), so that nothing wraps mid-word.
WIDTH = 80

# --- diagnosis (diagnose/) ---

#: The mistake ``permuted``: axis orders are tried on tensors (and on the upstream gradient and
#: inputs) of at most this many axes: a rank r has r! - 1 orders to try.
PERMUTED_RANK = 4

#: The mistake ``ignores_upstream``: the backward is called again with another upstream gradient,
#: g plus standard normals drawn from the case's seed XOR this salt (another draw than g's own,
#: the same at every run of the case).
SALT_IGNORES_UPSTREAM = 0xD1A

#: The mistake ``ignores_upstream`` for a scalar g: the other upstream gradient is g times this.
SCALAR_UPSTREAM_FACTOR = 2.0

#: The mistake ``scale``: a least-squares factor k (manual = k · autograd) within this of 1 is no
#: factor.
FACTOR_NOT_ONE = 1e-9

#: A factor within this relative distance of a dim's size, or of its inverse, is named after
#: that dim (``×N (N = 8): a mean taken as a sum?``); the text and what must match across sizes
#: use the same test.
FACTOR_DIM_RTOL = 1e-6

#: A factor within this relative distance of a simple fraction is shown as that fraction.
FACTOR_FRACTION_RTOL = 1e-9

#: A simple fraction: denominator at most this (``1/2``, ``3/8``) ...
FACTOR_MAX_DENOMINATOR = 8

#: ... and, for its meaning to be named (``×1/2: a missing ½?``), numerator at most this.
FACTOR_MAX_NUMERATOR = 8

#: Rows or columns a ``partial`` mistake lists before ``...``.
DIAGNOSIS_SHOWN_INDICES = 6

#: Wrong elements a ``partial`` mistake or a never-written location lists as examples, not all
#: of them: millions at a wide layer.
DIAGNOSIS_SHOWN_ELEMENTS = 3

#: Tracing the backward: a dict, tuple or list that holds more tensors than this is not followed
#: slot by slot (each change copies every slot).
TRACED_CONTAINER_SLOTS = 64

#: Tracing: a numpy array of at most this many elements is stamped by a hash of its bytes, so that
#: an in-place change shows; a larger one by its size only.
TRACED_HASH_ELEMENTS = 100_000

#: The line that first goes wrong: at most this many steps back through lines that only
#: rearrange a value (a slice, a flip).
ORIGIN_STEPS = 32

#: Whether a value holds the right gradient as a block (a padded gradient): every window
#: position is compared, and past this many elements compared it is not tried.
HOLDS_WINDOW_ELEMENTS = 4_000_000

#: A local of a numpy forward or a Function is named after the reference's tensor, and a mask the
#: backward recomputes is the forward's own, where they agree within this relative tolerance ...
FORWARD_SAME_RTOL = 1e-9

#: ... and this absolute one.
FORWARD_SAME_ATOL = 1e-12

# --- training (train/) ---
#: the manual run parts from autograd's where their distance leaves this many times the drift
#: of correct runs (never less than this many times the envelope dtype's epsilon).  Chosen on
#: correct models: over 126 correct runs (a tenth of the stable step to several times it, SGD,
#: momentum and Adam, float32 and float64) a margin of 1 parted 3, each within 1.5x the drift;
#: 10 parted none, and the closest of 210 came within 2.6x (docs/train.md has the sweep)
TRAIN_MARGIN = 10.0
#: rounding twins in float32 and lower: in a chaotic regime the drift of one pair of correct
#: runs spreads over an order of magnitude with the direction of their first difference
#: (tanh net, Adam at lr 1.8, step 7: 2e-6 to 8e-5 over eight twins), so the envelope takes
#: the widest of several.  Correct backwards that round otherwise came within 51x the float64
#: line alone, 5.8x or 1.6x of one twin (two draws), 1.6x of two (docs/train.md has the sweep)
TRAIN_TWINS = 2
#: a twin's gradient moves by up to this many times the dtype's epsilon x the tensor's largest
#: gradient, uniformly at random in each nonzero element: a correct backward that sums in
#: another order differs from autograd by about one such unit (measured: 0.4-1.3 on the tanh
#: net's w1, whose 1 - h*h cancels); exact zeros stay zero, as a mask or an unused row does
TRAIN_TWIN_ROUNDING = 1.0
#: seed salt of the rounding twins' moves (twin i draws from this + i): a replay draws the same
SALT_TRAIN_TWIN = 0x7417
#: a finite loss of autograd's run this many times its start has blown up: "both diverge"
TRAIN_BLOWUP = 1e4
#: optimiser steps of a run where neither the options nor the record's ``train`` dict say
TRAIN_STEPS = 100
#: the default SGD step lowers the first loss by this fraction, to first order:
#: lr = TRAIN_FIRST_STEP * |L| / |grad L|^2
TRAIN_FIRST_STEP = 0.05
#: momentum's steps add up to about this many times one (1 / (1 - TRAIN_MOMENTUM)), so its
#: default learning rate is SGD's divided by this
TRAIN_MOMENTUM_STEPS = 10
#: the ``momentum`` optimiser: torch.optim.SGD with this momentum
TRAIN_MOMENTUM = 0.9
#: Adam's default learning rate: torch's own default
TRAIN_ADAM_LR = 1e-3
#: SGD's learning rate where the first-order step cannot be computed (the first loss or its
#: gradient is zero or not finite)
TRAIN_FALLBACK_LR = 1e-3
#: seed salt of the default loss's random target (drawn from the run's seed ^ this)
SALT_TRAIN_TARGET = 0x7A46E7
#: the smallest scale a distance or a blow-up is measured against (a parameter norm, a start
#: loss), so that none divides by zero; also the floor of the plot's log axis
TRAIN_TINY = 1e-300

# --- the benchmark gate (bench/) ---

#: A 10% slowdown is flagged once the interval of the change is narrower than ±5 points
#: (--threshold, percent).
DEFAULT_THRESHOLD = 5.0
#: Memory: growth beyond this percentage is a regression (0: any growth).
DEFAULT_MEMORY_THRESHOLD = 0.0
#: A peak partly measured by tracemalloc (numpy models) moves by a few hundred bytes of
#: Python objects from run to run: growth within this fraction is not a regression.
APPROXIMATE_SLACK = 0.01
#: The report-wide false-flag rate: with no change to the code, at most this fraction of runs
#: flag any row slower (and at most this fraction any row faster), however many rows and
#: looks.  A gate on every pull request that fails one same-code run in twenty is already
#: noticed, so not looser; not tighter either, because the interval has only visits to stand
#: on: in a quick report of 18 rows against a baseline of 6 visits, 5% puts its ends at the
#: 3rd, 5th and 8th of the 54, 72 and 90 pairwise ratios after 9, 12 and 15 visits, and 1%
#: leaves no interval at all after 9.
FALSE_FLAG_RATE = 0.05
#: No slower or faster verdict before a row has this many visits in the run: six visits once
#: flagged a row that had not changed (+44% [+9.7%, +106%]); a quick row's six regular visits
#: are followed by at least one batch of extra ones before it may flag.
MIN_VISITS = 9
#: No verdict while the interval of the change spans more than this (high / low - 1): the
#: interval rests on the visits of both runs being alike when nothing changed, and a run
#: whose visits disagree that much is one whose machine also moved between the runs.
MAX_SPREAD = 0.5
#: With a baseline, a row still undecided gets VISITS_PER_LOOK more visits before each extra
#: look, up to EXTRA_LOOKS looks; all extra visits together get EXTRA_BUDGET seconds.  What
#: varies most is the machine between visits (another process on the other core), so a look
#: waits for several.
EXTRA_LOOKS = 3
#: Extra visits to an undecided row before each extra look (see EXTRA_LOOKS).
VISITS_PER_LOOK = 3
#: The most extra visits to an undecided row with a baseline (--bench-extra-visits).
EXTRA_VISITS = EXTRA_LOOKS * VISITS_PER_LOOK
#: Seconds for all extra visits together (--bench-extra-budget).
EXTRA_BUDGET = 10.0
#: Confidence of the intervals in the report and the gate.
CONFIDENCE = 0.95
#: Bootstrap resamples; fixed seed, so the same samples give the same interval.
RESAMPLES = 2000
#: The bootstrap's fixed seed: the same samples give the same interval.
BOOTSTRAP_SEED = 20240229
#: At least this many resamples in each tail of a change's interval, so that a 99% interval
#: is not one sample's luck.
TAIL_RESAMPLES = 20
#: (seconds per row, fewest rounds, most rounds) for a quick (True) and a full run.
BENCH_BUDGETS = {True: (0.6, 24, 900), False: (1.5, 60, 3000)}
#: Visits to every row, spread over the run: drift between them widens the row's interval, so
#: a machine that drifts during the run does not pass for a change.  What varies most between
#: visits is the machine (another process on the other core), and the regression gate counts
#: visits, not rounds: with three, no interval at the level of a report of 36 rows exists, so
#: a full run has six, as the quick pass has, each longer.
VISITS = 6
#: Visits to every row with --bench-quick: as many as a full run (see VISITS), each shorter.
QUICK_VISITS = 6
#: How long one block of calls of one side lasts, about: short, so that most rounds run inside
#: one scheduler time slice (a few ms) when other processes share the core.  With 2 ms blocks
#: most rounds were cut by another process's slice on a loaded machine.
BLOCK_SECONDS = 0.0003
#: Calls of each side before its block is sized, not recorded.
WARMUP_CALLS = 5
#: Unrecorded rounds before a visit, the fastest of which sizes it (a stalled one would make
#: the visit a rotation or two long, one value the next stall decides).
SIZING_ROUNDS = 3
#: Fewest full rotations of the order in one visit: a visit is one observation of the
#: regression gate, and its median over one rotation is a single round's luck (under load such
#: visits read 0.01 and 14 for a ratio of 0.8).  A rotation of a fast row is a millisecond or two.
MIN_ROTATIONS = 5
#: Other processes using more cores than this during the run get a note in the report.
BUSY_CORES = 0.1
#: Against a baseline of the same machine, autograd this many times faster or slower than then
#: gets a note: the machine's state moved, and tiny rows' ratios can move with it.
SPEED_NOTE = 1.25

# --- sharded Functions: the ranks and their pool (kinds/ranks.py, kinds/sharding.py) ---

#: The world sizes a sharded record's cases draw from unless it names its own: one rank (the
#: Function alone) up to four, the most a 2-core CI machine runs as processes in seconds; 3
#: is the odd size where a chunk's arithmetic (``n // W``) first goes wrong.
SHARDED_WORLD_SIZES = (1, 2, 3, 4)
#: Seconds a rank may wait in one collective for the other ranks (for them to arrive, and in
#: gloo: the process group's own timeout, given to ``init_process_group``), unless the record
#: (``collective_timeout``) or ``check --collective-timeout`` says otherwise: the slowest correct
#: collective of tests/test_sharded.py's and the parallel bank's records at world size 4 took
#: 1.2 s with the machine's load at 12 to 31 (benchmarks/collective_wait.py), so a rank that
#: waits 25 times that waits for a rank that will never come.
SHARDED_TIMEOUT = 30.0
#: Seconds on top of the collective timeout before the parent gives up on a rank inside one
#: collective: the rank's own timeout reports first, with the collective it was in.
SHARDED_GRACE = 5.0
#: Seconds for the ranks of a pool to start and join the process group: each imports torch
#: (about 2 s for 4 ranks on 2 idle cores; ten times that on a loaded machine still passes).
SHARDED_START_TIMEOUT = 120.0
#: Seconds a closing rank gets to leave the process group before it is killed.
SHARDED_CLOSE_WAIT = 5.0
#: How near a rank's share of the gradient must be to a whole factor (the world size, its
#: inverse) of autograd's, relatively, for the message to name that factor: a doubled
#: gradient is 2.0 to rounding; 5% leaves room for a partial gradient's random shares.
SHARDED_FACTOR_GAP = 0.05
#: Seconds the other ranks get, once one rank has failed, to report errors of their own before
#: the pool is closed: the lowest rank with a real error is named, so the message does not
#: depend on which rank's answer arrived first; those still waiting in a collective are not
#: waited for (they would only echo the failure, after the whole ``SHARDED_TIMEOUT``).
SHARDED_ECHO_WAIT = 0.5
#: How near (relative to the larger magnitude) autograd's gradient of the reference on a rank's
#: shards must be to the sharded Function's, as is or summed over the ranks, for ``bench`` to
#: time it as the same per-rank computation: it tells a local gradient from one summed over
#: the ranks (a factor of the world size) or a missing part, never rounding (float32 is ~1e-7).
SHARDED_BENCH_MATCH = 1e-3

#: Seconds between the parent's looks at a running task's ranks (which collective each is in,
#: and for how long): a case abandoned at its time limit stops within this, and its ranks are
#: killed; an answer is read as soon as it comes, whatever this is.
SHARDED_POLL = 0.05
