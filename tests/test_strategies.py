"""Strategy factories check their arguments up front and cover awkward sizes and scales."""
import pytest
from hypothesis import given, settings

from gradcheck_suite.run import strategies


@pytest.mark.parametrize("call, message", [
    (lambda: strategies.sizes(3, 1), "need 1 <= low <= high, got low=3, high=1"),
    (lambda: strategies.scales(low=10.0, high=1.0), "got low=10.0, high=1.0"),
    (lambda: strategies.profile_settings("forever"), "unknown profile 'forever'; choose from quick, nightly"),
    (lambda: strategies.profile_settings("quick", examples=0), "examples=0 must be at least 1"),
])
def test_arguments_are_checked_up_front(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_fixing_an_unknown_dimension_is_refused(registry):
    with pytest.raises(ValueError, match="mlp_relu has no dimension Q; it has N, D_in, H, D_out"):
        strategies.dims(registry.get("mlp_relu"), fixed={"Q": 2})


def test_cases_cover_size_one_awkward_sizes_and_both_ends_of_the_scale_range(registry):
    model = registry.get("mlp_relu")
    seen_n, seen_scales = set(), []

    @settings(max_examples=200, derandomize=True, database=None)
    @given(strategies.cases(model))
    def collect(case):
        assert list(case.dims) == list(model.dims)
        for k, v in case.dims.items():
            assert model.dims[k].low <= v <= model.dims[k].high
        seen_n.add(case.dims["N"])
        seen_scales.append(case.scale)

    collect()
    assert 1 in seen_n and any(n % 8 and n & (n - 1) for n in seen_n)
    assert min(seen_scales) == 1e-3 and max(seen_scales) == 1e3


def test_fixed_values_stay_fixed(registry):
    model = registry.get("linear_layer")

    @settings(max_examples=20, derandomize=True, database=None)
    @given(strategies.cases(model, dtype="float32", fixed_dims={"I": 1000}, seed=7, scale=2.0))
    def check(case):
        assert case.dims["I"] == 1000 and case.seed == 7 and case.scale == 2.0 and case.dtype == "float32"

    check()
