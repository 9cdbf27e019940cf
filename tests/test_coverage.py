"""The cases a run reaches: corners first (both scale ends, size 1, the largest and an
awkward size of every dim), no case twice, coverage in the report, and nightly failures
kept per model and replayed first."""
import pytest
import torch
from hypothesis.database import DirectoryBasedExampleDatabase

from gradcheck_suite import Dim, Model
from gradcheck_suite import run_model
from gradcheck_suite.run.strategies import awkward, corners
from gradcheck_suite.verdict import rules


@pytest.mark.parametrize("name", ["mlp_relu", "linear_layer", "deep_linear", "affine_scalar"])
def test_the_quick_profile_reaches_every_corner_without_more_cases(registry, name):
    m = registry.get(name)
    run = run_model(m)
    cov = run.coverage()
    assert rules.SCALE_RANGE[0] in cov["scales"] and rules.SCALE_RANGE[1] in cov["scales"]
    for k, dim in m.dims.items():
        assert dim.low in cov["sizes"][k] and dim.high in cov["sizes"][k], (k, cov["sizes"][k])
        assert awkward(dim.low, dim.high) in cov["sizes"][k]
    judged = run.checked + run.nondiff + run.skipped
    assert judged <= 20 + 20          # the profile's 20, plus what hypothesis rejects as set aside


def test_no_case_is_judged_twice(registry):
    m = registry.get("affine_scalar")          # no dims: only seeds and scales vary
    cases = []
    from gradcheck_suite.run import limits as runner

    real = runner.check_case

    def spy(model, case):
        cases.append((case.seed, case.scale))
        return real(model, case)

    runner.check_case = spy
    try:
        run_model(m)
    finally:
        runner.check_case = real
    assert len(cases) == len(set(cases))


def test_corners_keep_what_is_given_and_drop_repeats(registry):
    m = registry.get("mlp_relu")
    got = corners(m, fixed_dims={"N": 5}, scale=2.0)
    assert all(dims["N"] == 5 and sc == 2.0 for dims, _, _, sc in got)
    assert len({tuple(d.values()) for d, _, _, _ in got}) == len(got)
    assert awkward(1, 32) == 31 and awkward(1, 8) == 7 and awkward(4, 4) == 4


def _softmax_ce(shift):
    def forward(p, d):
        lse = torch.logsumexp(p.z, dim=1)
        return (lse - (p.z * d.y).sum(dim=1)).sum(), lse

    def backward(p, d, lse, g):
        z = p.z - p.z.amax(dim=1, keepdim=True) if shift else p.z
        e = z.exp()                          # without the shift, exp overflows past 709
        return {"z": g * (e / e.sum(dim=1, keepdim=True) - d.y)}

    def make(dims, gen, dtype, scale):
        k = dims["K"]
        y = torch.nn.functional.one_hot(torch.randint(0, k, (dims["N"],), generator=gen), k).to(torch.float64)
        return {"z": scale * torch.randn(dims["N"], k, generator=gen, dtype=torch.float64), "y": y}

    return Model(name=f"softmax_ce_{'shift' if shift else 'noshift'}", dims={"N": Dim(1, 8, 8), "K": Dim(1, 10, 10)},
                 params={"z": ("N", "K")}, data={"y": ("N", "K")}, forward=forward, backward=backward, make_tensors=make)


def test_a_softmax_without_the_max_shift_is_caught_by_the_quick_profile():
    assert run_model(_softmax_ce(shift=True)).verdict == "pass"
    run = run_model(_softmax_ce(shift=False))
    assert run.verdict != "pass"
    assert "z" in (run.failure.failing or run.failure.problems[0])
    assert run.failure.case.scale == rules.SCALE_RANGE[1]


def _fails_between(low, high):
    def backward(p, d, c, g):          # wrong only at sizes that no corner case has
        grad = g * 2 * p.w
        return {"w": grad * 1.5 if low <= p.w.numel() <= high else grad}

    return Model(name=f"wrong_from_{low}_to_{high}", dims={"N": Dim(1, 20, 20)}, params={"w": ("N",)},
                 forward=lambda p, d: ((p.w ** 2).sum(), None), backward=backward)


def test_a_nightly_failure_is_kept_per_model_and_replayed_first(tmp_path):
    db = DirectoryBasedExampleDatabase(tmp_path / "examples")
    wrong, right = _fails_between(10, 16), _fails_between(0, 0)
    first = run_model(wrong, profile="nightly", examples=150, database=db)
    assert first.verdict == "fail" and 10 <= first.failure.case.dims["N"] <= 16
    # another model on the same database neither replays nor deletes it
    assert run_model(right, profile="nightly", examples=20, database=db).verdict == "pass"
    first_sizes = []

    def note_first(run):                 # a copy: the run keeps adding to its own sets
        if not first_sizes:
            first_sizes.append({k: set(v) for k, v in run.sizes.items()})

    again = run_model(wrong, profile="nightly", examples=150, database=db, on_case=note_first)
    # the very first case judged was the saved failure, and it failed again: no other case
    # was checked before it (it may shrink further)
    assert first_sizes == [{"N": {first.failure.case.dims["N"]}}] and again.checked == 1
    assert again.verdict == "fail" and 10 <= again.failure.case.dims["N"] <= first.failure.case.dims["N"]
