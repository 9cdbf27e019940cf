"""The record's fields for real layers: derived shapes, constraints, hyperparameters,
per-tensor factories and scales, and files that define models in lists or factories."""
import pytest
import torch
from hypothesis import given, settings

from gradcheck_suite import Case, Dim, Model, SpecError, load
from gradcheck_suite.run import strategies
from gradcheck_suite.check.case import build, parse_hyper


def _model(**fields):
    base = dict(name="rec", dims={"N": Dim(1, 6, 4), "L": Dim(1, 9, 8)}, params={"w": ("L",)},
                forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
    return Model(**{**base, **fields})


def _drawn(model, count=60, **kwargs):
    seen = []

    @settings(max_examples=count, derandomize=True, database=None)
    @given(strategies.cases(model, **kwargs))
    def collect(case):
        seen.append(case)

    collect()
    return seen


def test_bounds_that_read_other_dims_are_drawn_in_dependency_order():
    m = _model(dims={"K": Dim(1, "L", 3), "L": Dim(1, 9, 8)}, params={"w": ("K",)})
    cases = _drawn(m)
    assert all(1 <= c.dims["K"] <= c.dims["L"] for c in cases)
    assert any(c.dims["K"] == c.dims["L"] > 1 for c in cases)
    assert list(cases[0].dims) == ["K", "L"]


def test_a_where_constraint_filters_and_hyperparameters_are_drawn_and_shown():
    m = _model(hyper={"stride": Dim(1, 3, 2), "mode": ("same", "valid")}, where="N * stride <= L")
    cases = _drawn(m)
    assert all(c.dims["N"] * c.hyper["stride"] <= c.dims["L"] for c in cases)
    assert {c.hyper["mode"] for c in cases} == {"same", "valid"}
    case = Case("rec", {"N": 2, "L": 8}, "float64", "cpu", 0, 1.0, {"stride": 3, "mode": "same"})
    assert "hyper stride=3, mode=same" in case.describe()
    assert "--hyper stride=3,mode=same" in case.command()
    assert parse_hyper("stride=3,mode='same',flag=True,p=0.5") == {"stride": 3, "mode": "same", "flag": True, "p": 0.5}


def test_derived_shapes_factories_and_per_tensor_scales():
    m = _model(dims={"N": Dim(1, 6, 4), "C": Dim(1, 5, 3)}, hyper={"S": Dim(1, 3, 2)},
               params={"w": ("C", "(N - 1) * S + 2")}, data={"y": ("N",), "x": ("N", lambda v: v["C"] * 4)},
               factories={"y": lambda dims, gen, dtype, scale: torch.randint(0, dims["C"], (dims["N"],), generator=gen)},
               scales={"x": (1e-2, 1e-1)}, forward=lambda p, d: ((p.w ** 2).sum(), None))
    p, d = build(m, Case("rec", {"N": 4, "C": 3}, "float64", "cpu", 1, 1e3, {"S": 2}))
    assert p.w.shape == (3, 8) and d.x.shape == (4, 12)
    assert d.y.dtype == torch.int64 and int(d.y.max()) < 3
    assert float(d.x.abs().max()) < 1.0 < float(p.w.abs().max())     # x's scale is clamped to 0.1


def test_a_model_scale_range_bounds_the_drawn_scales():
    cases = _drawn(_model(scale_range=(1e-2, 10.0)))
    assert min(c.scale for c in cases) == 1e-2 and max(c.scale for c in cases) == 10.0


@pytest.mark.parametrize("fields, where, text", [
    ({"data": {"x": ("N", "L + Q")}}, "data.x", "uses 'Q' in 'L + Q', which is not in dims (N, L)"),
    ({"data": {"x": ("N", "__import__('os')")}}, "data.x", "only min(...) and max(...) may be called"),
    ({"dims": {"N": Dim(1, "L", 2), "L": Dim(1, "N", 2)}}, "dims", "depend on each other in a cycle"),
    ({"hyper": {"N": (1, 2)}}, "hyper.N", "is also a dimension"),
    ({"hyper": {"p": ()}}, "hyper.p", "non-empty tuple of choices"),
    ({"factories": {"q": lambda *a: None}}, "factories.q", "names no tensor of this model"),
    ({"scales": {"w": (1.0, 0.1)}}, "scales.w", "need 0 < low <= high"),
    ({"backward_runs": 1}, "backward_runs", "must be a whole number >= 2"),
    ({"where": "N <"}, "where", "is not an expression of dimensions"),
])
def test_bad_records_name_the_model_and_the_field(fields, where, text):
    with pytest.raises(SpecError) as info:
        _model(**fields)
    assert info.value.field == where and info.value.model == "rec"
    assert text in str(info.value)


def test_bad_op_and_numpy_records_are_refused_with_the_field():
    from gradcheck_suite import numpy_model, op_model
    with pytest.raises(SpecError, match="model 'op', field 'reference': an op hides its backward"):
        op_model(torch.sin, name="op", dims={"N": Dim(1, 2, 2)}, inputs={"x": ("N",)}, reference=None)
    with pytest.raises(SpecError, match="field 'args': 'z' is not one of x"):
        op_model(torch.sin, name="op", dims={"N": Dim(1, 2, 2)}, inputs={"x": ("N",)}, reference=torch.sin, args=("z",))
    with pytest.raises(SpecError, match="field 'double_backward': numpy code has no graph"):
        numpy_model(abs, abs, name="np", dims={"N": Dim(1, 2, 2)}, inputs={"x": ("N",)}, double_backward=True)


LAYER = """
import torch

def forward(p, d):
    return (p.w * d.x).sum(), None

def backward(p, d, cache, g):
    return {"w": g * d.x}
"""

LISTED = """
from gradcheck_suite import Dim, Model
from layer_helpers import forward, backward

def make(name, high):
    return Model(name=name, dims={"N": Dim(1, high, 4)}, params={"w": ("N",)}, data={"x": ("N",)},
                 forward=forward, backward=backward)

several = [make("listed_a", 3), make("listed_b", 5)]

def gradcheck_models():
    return [make(f"made_{k}", k) for k in (2, 4)]
"""


def test_a_file_defines_models_in_a_list_and_a_factory_and_imports_the_file_beside_it(tmp_path):
    (tmp_path / "layer_helpers.py").write_text(LAYER)
    (tmp_path / "listed.py").write_text(LISTED)
    reg = load([str(tmp_path / "listed.py")], builtin=False, entry_points=False)
    assert not reg.problems and sorted(reg.names()) == ["listed_a", "listed_b", "made_2", "made_4"]
    bad = tmp_path / "bad_factory.py"
    bad.write_text("def gradcheck_models():\n    return [1]\n")
    reg = load([str(bad)], builtin=False, entry_points=False)
    assert reg.problems == [f"{bad}: gradcheck_models() raised TypeError: it must return Model records, got int"]


def test_a_bad_op_record_in_a_file_names_the_file_line_model_and_field(tmp_path):
    f = tmp_path / "no_reference.py"
    f.write_text("import torch\nfrom gradcheck_suite import Dim, op_model\n\n"
                 "model = op_model(torch.sin, name='sine', dims={'N': Dim(1, 4, 4)}, inputs={'x': ('N',)},\n"
                 "                 reference=None)\n")
    reg = load([str(f)], builtin=False, entry_points=False)
    assert len(reg.problems) == 1
    assert reg.problems[0].startswith(f"{f}:4: model 'sine', field 'reference': an op hides its backward")


def test_fixed_dims_that_break_a_dependent_bound_or_where_are_refused_up_front():
    from gradcheck_suite import run_model
    m = _model(dims={"K": Dim(1, "L", 3), "L": Dim(1, 9, 8)}, params={"w": ("K",)}, where="L != 7")
    run = run_model(m, dims={"K": 5, "L": 3})
    assert run.verdict == "error"
    assert run.problems == ["the given dims and hyperparameters do not fit the record: K=5 is outside its bounds "
                            "[1, L] = [1, 3]"]
    run = run_model(m, dims={"L": 7}, examples=3)
    assert run.verdict == "error" and "breaks the constraint L != 7" in run.problems[0]
    assert run_model(m, dims={"L": 4}, examples=3).verdict == "pass"


def test_a_where_that_raises_is_a_line_not_a_traceback():
    from gradcheck_suite import run_model
    m = _model(where=lambda v: v["Q"] > 1)
    assert run_model(m, examples=3).problems == [
        "no case could be judged: 0 non-differentiable, 0 with a forward or autograd that is not finite, "
        "the rest filtered out by the record's where"]
    run = run_model(m, dims={"N": 2, "L": 3}, seed=1, scale=1.0)
    assert run.problems == ["the given dims and hyperparameters do not fit the record: where raised KeyError: 'Q'"]
