"""A rank that raises, hangs, dies or calls the wrong collective (issue 27, faults).

Each fault ends its case as an error in bounded time with one line naming the rank, the
collective it was in (or the one the others waited in) and the cause; the ranks of a failed
pool are gone, and the next model checks normally on a pool started again.  The records are
in ``tests/rank_fault_models.py`` with a ``collective_timeout`` of 2 s, so a hang costs seconds:
the bound asserted below (``BOUND``) is under the default timeout, so it holds only because
the record's own timeout was used.
"""
from __future__ import annotations

import time

import pytest

from gradcheck_suite import Dim, SpecError, run_model, sharded_model
from gradcheck_suite.check import PASS
from gradcheck_suite.kinds import collectives, ranks
from gradcheck_suite.run.report import case_message
from gradcheck_suite.verdict import rules

from . import rank_fault_models as fm
from .conftest import flat

#: seconds a failing model may take at most: under rules.SHARDED_TIMEOUT, whatever the load
BOUND = 25.0


@pytest.fixture(scope="module", autouse=True)
def pool():
    """The pool of 2 ranks started before the first case (its first start imports torch), and
    every rank gone after the module."""
    ranks.pool(2, fm.TIMEOUT)
    yield
    left = ranks.pids()
    ranks.close_all()
    assert ranks.pids() == []
    assert _gone(left), f"rank processes {left} outlived close_all()"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended), read from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pids: list[int], within: float = 10.0) -> bool:
    end = time.monotonic() + within
    while any(_alive(p) for p in pids):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _check(model, **kwargs):
    """The model's run, its one-line error, the seconds it took, and the ranks it ran on."""
    ranks.pool(2, fm.TIMEOUT)
    before = ranks.pids()
    begun = time.monotonic()
    run = run_model(model, examples=2, **kwargs)
    took = time.monotonic() - begun
    text = " ".join(run.failure.problems) if run.failure is not None and run.failure.problems else \
        flat(case_message(run.failure)) if run.failure is not None else ""
    return run, text, took, before


def _then_a_model_checks_normally(before: list[int], killed: bool) -> None:
    """The ranks of a pool that had to be killed are gone; the next model passes."""
    if killed:
        assert _gone(before), f"rank processes {before} outlived their failed case"
    run = run_model(fm.fine, examples=2)
    assert run.verdict == PASS, run.problems or case_message(run.failure)
    assert ranks.pids() and all(_alive(p) for p in ranks.pids())
    if killed:
        assert not set(before) & set(ranks.pids()), "the pool was not started again"


@pytest.mark.parametrize("model, words, killed", [
    (fm.raises, ["rank 1 of 2 raised ValueError: rank one's own error (at rank_fault_models.py:",
                 "while rank 0 waited in all_reduce (tensor "], False),
    (fm.raises_inside, ["rank 1 of 2 raised TypeError", "in all_reduce (tensor ", "called at rank_fault_models.py:",
                        "while rank 0 waited in all_reduce"], True),
])
def test_a_rank_that_raises_in_a_backward_is_named_with_the_collective(model, words, killed):
    run, text, took, before = _check(model)
    assert run.verdict == "error", text
    for w in words:
        assert w in text, text
    assert "Connection closed" not in text and took < BOUND
    _then_a_model_checks_normally(before, killed)


def test_a_rank_that_skips_an_all_reduce_is_named_at_once():
    run, text, took, before = _check(fm.skips)
    assert run.verdict == "error", text
    assert text.startswith("rank 1 of 2 returned without calling all_reduce (tensor "), text
    assert "which rank 0 called at rank_fault_models.py:" in text and "called on some ranks only" in text
    assert took < BOUND
    _then_a_model_checks_normally(before, False)     # no rank entered gloo: the pool stays in step


def test_a_rank_that_never_reaches_the_all_reduce_hangs_for_the_records_timeout():
    run, text, took, before = _check(fm.spins)
    assert run.verdict == "error", text
    assert text.startswith("rank 1 of 2 hung outside any collective, while rank 0 waited in all_reduce (tensor "), text
    assert f"for {fm.TIMEOUT:g} s (collective_timeout)" in text
    assert took < BOUND
    _then_a_model_checks_normally(before, True)


def test_a_rank_that_calls_all_reduce_with_another_size_is_named_with_both_sizes():
    run, text, took, before = _check(fm.other_size)
    assert run.verdict == "error", text
    assert text.startswith("rank 1 of 2 called all_reduce with tensor 1x"), text
    assert "where rank 0 called all_reduce with tensor 2x" in text and "different sizes" in text
    assert took < BOUND
    _then_a_model_checks_normally(before, False)


@pytest.mark.parametrize("model, cause", [(fm.segfaults, "died (Fatal Python error: Segmentation fault at "
                                                         "rank_fault_models.py:"),
                                          (fm.exits, "died (exit code 3)")])
def test_a_rank_that_dies_is_named_with_its_cause_and_the_collective_the_others_waited_in(model, cause):
    run, text, took, before = _check(model)
    assert run.verdict == "error", text
    assert text.startswith(f"rank 1 of 2 {cause}"), text
    assert "outside any collective, while rank 0 waited in all_reduce (tensor " in text
    assert took < BOUND
    _then_a_model_checks_normally(before, True)


def test_a_rank_spinning_outside_any_collective_ends_at_the_case_timeout_and_its_ranks_are_killed():
    run, text, took, before = _check(fm.spins_alone, case_timeout=4)
    assert run.verdict == "error", text
    assert "did not finish within 4 s (--case-timeout)" in text, text
    assert "rank 1 of 2 was still running outside any collective: its ranks were killed" in text, text
    assert took < BOUND
    _then_a_model_checks_normally(before, True)


# -- the pool itself ------------------------------------------------------------------------------

@pytest.mark.parametrize("task, words", [
    ("skip_all_reduce", "rank 1 of 2 returned without calling all_reduce (tensor 4x8 float64)"),
    ("other_collective", "rank 1 of 2 called all_gather (tensor 4x8 float64) at rank_fault_models.py:"),
])
def test_the_pool_names_a_mismatch_before_gloo_and_stays_up(task, words):
    p = ranks.pool(2, fm.TIMEOUT)
    before = ranks.pids()
    with pytest.raises(ranks.RankError) as e:
        p.run(f"tests.rank_fault_models:{task}", [None, None])
    assert str(e.value).startswith(words), str(e.value)
    assert ranks.pids() == before
    assert ranks.pool(2, fm.TIMEOUT).run("tests.rank_fault_models:all_reduce_ones", [None, None]) == [2.0, 2.0]


def test_without_the_comparison_gloos_own_timeout_ends_a_skipped_all_reduce():
    p = ranks.pool(2, fm.TIMEOUT)
    before = ranks.pids()
    p.match = False
    try:
        begun = time.monotonic()
        with pytest.raises(ranks.RankError) as e:
            p.run("tests.rank_fault_models:skip_all_reduce", [None, None])
        took = time.monotonic() - begun
    finally:
        p.match = True
    text = str(e.value)
    # the table still shows what each rank did: named as before, once gloo's timeout ended rank 0's wait
    assert text.startswith("rank 1 of 2 returned without calling all_reduce (tensor 4x8 float64)"), text
    assert took < BOUND
    assert _gone(before)
    assert ranks.pool(2, fm.TIMEOUT).run("tests.rank_fault_models:all_reduce_ones", [None, None]) == [2.0, 2.0]


def test_a_collective_on_another_group_is_not_compared():
    assert not collectives._differ(None, ["all_reduce", 4, "float64"])
    assert not collectives._differ(["all_to_all", None, "float64"], ["all_to_all", None, "float64"])
    assert collectives._differ(["all_reduce", 4, "float64"], ["all_reduce", 4, "float32"])
    assert not collectives._differ(["all_gather", 8, "float64"], ["all_gather", 8, "float64"])


def test_the_timeout_comes_from_the_option_the_record_and_the_rule():
    assert ranks.collective_timeout() == rules.SHARDED_TIMEOUT
    assert ranks.collective_timeout(3.0) == 3.0
    ranks.TIMEOUT_OVERRIDE = 7.0
    try:
        assert ranks.collective_timeout(3.0) == 7.0
    finally:
        ranks.TIMEOUT_OVERRIDE = None


@pytest.mark.parametrize("value", [0, -1.0, "30", True, float("inf")])
def test_a_bad_collective_timeout_is_refused(value):
    with pytest.raises(SpecError) as e:
        sharded_model(fm.CopyFine, name="bad", dims={"n": Dim(1, 4, 4)}, inputs={"x": (("n",), fm.Replicate())},
                      reference=lambda x: x, output=fm.Replicate(), grad=fm.Partial(), collective_timeout=value)
    assert e.value.field == "collective_timeout" and "positive number of seconds" in str(e.value)


def test_a_collective_timeout_belongs_to_a_sharded_record():
    from gradcheck_suite import Model
    with pytest.raises(SpecError) as e:
        Model(name="plain", dims={"n": Dim(1, 4, 4)}, params={"x": ("n",)}, forward=lambda p, d: (p.x, None),
              backward=lambda p, d, c, g: {"x": g}, collective_timeout=5.0)
    assert e.value.field == "collective_timeout" and "sharded record" in str(e.value)


def test_the_command_overrides_the_records_timeout_and_checks_the_next_model(tmp_path):
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "gradcheck_suite", "check", "spins", "fine", "--models-from",
                          os.path.join(root, "tests", "rank_fault_models.py"), "--collective-timeout", "1",
                          "--examples", "2", "--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    text = flat(out.stdout)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "rank 1 of 2 hung outside any collective, while rank 0 waited in all_reduce" in text, text
    assert "for 1 s (collective_timeout)" in text
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines() if line.strip()}
    assert "pass" in rows["fine"] and "ERROR" in rows["spins"], out.stdout     # the next model checks normally
    bad = subprocess.run([sys.executable, "-m", "gradcheck_suite", "check", "--collective-timeout", "0", "--models-from",
                          os.path.join(root, "tests", "rank_fault_models.py")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600)
    assert bad.returncode == 2 and "--collective-timeout 0: must be a positive number of seconds" in bad.stdout + bad.stderr
