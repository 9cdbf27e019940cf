"""torch.library.opcheck on custom ops: on by default in the nightly profile, opt-in in the
quick one, a record's own opcheck=False winning; a failure names each of its tests that
failed, with torch's reason, in one line."""
import pytest
import torch
from hypothesis.database import DirectoryBasedExampleDatabase

from gradcheck_suite import Dim, op_model, run_model
from gradcheck_suite.run.strategies import PROFILES, profile_settings


def _twice(name, fake=None, **fields):
    """y = 2x as a custom op with a correct autograd registration; ``fake`` its register_fake."""
    @torch.library.custom_op(f"gradcheck_opcheck_tests::{name}", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    if fake is not None:
        twice.register_fake(fake)
    twice.register_autograd(lambda ctx, g: 2 * g, setup_context=lambda ctx, inputs, output: None)
    return op_model(twice, name=name, dims={"N": Dim(1, 4, 4)}, inputs={"x": ("N",)}, reference=lambda x: 2 * x,
                    **fields)


def _right_fake(x):
    return torch.empty_like(x)


def _wrong_fake(x):              # one element too many
    return x.new_empty(x.shape[0] + 1)


@pytest.fixture
def nightly(tmp_path):
    db = DirectoryBasedExampleDatabase(tmp_path / "examples")
    return lambda m: run_model(m, profile="nightly", examples=2, database=db)


def test_the_profiles_say_who_runs_opcheck():
    assert PROFILES["nightly"]["opcheck"] is True and PROFILES["quick"]["opcheck"] is False
    assert profile_settings("nightly").max_examples == PROFILES["nightly"]["max_examples"]


def test_a_wrong_register_fake_fails_nightly_naming_test_faketensor(nightly):
    run = nightly(_twice("fake_wrong_nightly", _wrong_fake))
    assert run.verdict == "error"
    text = run.failure.problems[0]
    assert text.startswith("torch.library.opcheck failed: test_faketensor (MetadataMismatchError: "), text
    assert "Shapes torch.Size([1]) and torch.Size([2]) are not equal" in text
    assert "test_schema, test_autograd_registration passed" in text
    assert "\n" not in text and "scroll up" not in text
    assert text.endswith("(the nightly profile runs opcheck: reproduce with --profile nightly, or give the record "
                         "opcheck=True)")


def test_a_wrong_register_fake_passes_quick_where_opcheck_is_opt_in():
    assert run_model(_twice("fake_wrong_quick", _wrong_fake), examples=2).verdict == "pass"
    run = run_model(_twice("fake_wrong_asked", _wrong_fake, opcheck=True), examples=2)
    assert run.verdict == "error"
    assert run.failure.problems[0].startswith("torch.library.opcheck failed: test_faketensor (")
    assert "nightly" not in run.failure.problems[0]


def test_a_records_opcheck_false_wins_in_nightly(nightly):
    # compile=False too: nightly's compiled stage would see what the wrong fake does (below)
    assert nightly(_twice("fake_wrong_off", _wrong_fake, opcheck=False, compile=False)).verdict == "pass"


def test_a_wrong_register_fake_with_opcheck_off_still_fails_nightly_under_compile(nightly):
    run = nightly(_twice("fake_wrong_compiled", _wrong_fake, opcheck=False))
    assert run.verdict == "fail"
    assert run.failure.failing == ["x under torch.compile (aot_eager)"]


def test_a_correct_custom_op_passes_nightly(nightly):
    run = nightly(_twice("fake_right", _right_fake))
    assert run.verdict == "pass", run.failure and run.failure.problems
    assert not any("opcheck" in n for n in run.notes.values())


def test_no_fake_at_all_is_a_note_in_nightly_and_an_error_where_asked(nightly):
    """An op without register_fake runs eagerly as it should: nightly's default notes what
    opcheck could not test; a record that asks for opcheck gets its failure, as before."""
    run = nightly(_twice("fake_none"))
    assert run.verdict == "pass", run.failure and run.failure.problems
    note = next(n for n in run.notes.values() if "opcheck" in n)
    assert note.startswith("torch.library.opcheck: the op has no fake implementation, so test_faketensor and "
                           "test_aot_dispatch_dynamic could not run"), note
    run = run_model(_twice("fake_none_asked", opcheck=True), examples=2)
    assert run.verdict == "error"
    assert "no fake impl registered" in run.failure.problems[0]


def test_a_function_is_not_opchecked_nightly(nightly):
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    m = op_model(Double, name="double_fn", dims={"N": Dim(1, 4, 4)}, inputs={"x": ("N",)}, reference=lambda x: 2 * x)
    assert nightly(m).verdict == "pass"


def test_opcheck_is_true_false_or_left_out():
    with pytest.raises(Exception, match="field 'opcheck': must be True, False or left out"):
        _twice("fake_yes", _right_fake, opcheck="yes")
