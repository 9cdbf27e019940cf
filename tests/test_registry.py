"""Model records and loading: bad records and files give messages that name the file,
the model and the field, and everything else still loads."""

import pytest

from gradcheck_suite import Dim, Model, SpecError
from gradcheck_suite import Registry, load

GOOD = """
from gradcheck_suite import Dim, Model

def forward(p, d):
    return (p.w * d.x).sum(), None

def backward(p, d, cache, g):
    return {{"w": g * d.x}}

model = Model(name={name!r}, dims={{"N": Dim(1, 4, 3)}}, params={{"w": ("N",)}}, data={{"x": ("N",)}},
              forward=forward, backward=backward)
"""


def _model(**changes):
    fields = dict(name="tiny", dims={"N": Dim(1, 4, 3)}, params={"w": ("N",)}, data={"x": ("N",)},
                  forward=lambda p, d: ((p.w * d.x).sum(), None), backward=lambda p, d, c, g: {"w": g * d.x})
    fields.update(changes)
    return Model(**fields)


@pytest.mark.parametrize("changes, field, text", [
    (dict(dims={"N": Dim(3, 1, 2)}), "dims.N", "low=3 is larger than high=1"),
    (dict(dims={"N": Dim(0, 4, 2)}), "dims.N", "low=0 must be a whole number >= 1"),
    (dict(dims={"N": (1, 4)}), "dims.N", "must be Dim(low, high, bench)"),
    (dict(params={"w": ("M",)}), "params.w", "uses 'M', which is not in dims (N)"),
    (dict(params={"w": "N"}), "params.w", "shape must be a tuple"),
    (dict(params={}), "params", "nothing to differentiate"),
    (dict(data={"w": ("N",)}), "data", "w is both a parameter and data"),
    (dict(grad_data=("y",)), "grad_data", "'y' is not one of the data tensors (x)"),
    (dict(dtype="float128"), "dtype", "'float128' is not one of"),
    (dict(backward=None), "backward", "must be callable"),
    (dict(name="Bad Name"), "name", "must be lower-case letters"),
    (dict(domain={"z": (0, None)}), "domain.z", "names no tensor"),
    (dict(domain={"x": (1.0, 0.0)}), "domain.x", "low=1.0 is not below high=0.0"),
])
def test_invalid_records_name_the_model_and_field(changes, field, text):
    with pytest.raises(SpecError) as info:
        _model(**changes)
    assert info.value.field == field
    assert text in str(info.value)
    assert "tiny" in str(info.value) or field == "name"


def test_a_bad_record_in_a_file_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad_dims.py"
    bad.write_text(GOOD.format(name="bad_dims").replace("Dim(1, 4, 3)", "Dim(5, 4, 3)"))
    good = tmp_path / "good.py"
    good.write_text(GOOD.format(name="good_one"))
    reg = load([str(tmp_path)], builtin=False, entry_points=False)
    assert reg.names() == ["good_one"]
    assert reg.problems == [f"{bad}:10: model 'bad_dims', field 'dims.N': low=5 is larger than high=4"]


def test_duplicate_names_are_refused_naming_both_files(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text(GOOD.format(name="same"))
    b.write_text(GOOD.format(name="same"))
    reg = load([str(a), str(b)], builtin=False, entry_points=False)
    assert reg.names() == ["same"]
    assert reg.problems == [f"{b}: model 'same', field 'name': duplicate name: a model 'same' is already registered from {a}"]


def test_a_duplicate_of_a_built_in_model_is_refused(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(GOOD.format(name="mlp_relu"))
    reg = load([str(f)])
    assert "duplicate name: a model 'mlp_relu' is already registered from" in reg.problems[0]
    assert len(reg) == 9


def test_a_model_file_that_raises_is_reported_and_the_rest_loads(tmp_path):
    f = tmp_path / "raises.py"
    f.write_text("import torch\n\nraise RuntimeError('no GPU weights here')\n")
    reg = load([str(f)])
    assert reg.problems == [f"{f}:3: the model file raised RuntimeError: no GPU weights here"]
    assert len(reg) == 9


def test_missing_files_and_modules_are_usage_problems(tmp_path):
    reg = load([str(tmp_path / "nope.py"), "no_such_module_xyz"], builtin=False, entry_points=False)
    assert reg.not_found == [f"{tmp_path / 'nope.py'}: no such file or module", "no_such_module_xyz: no such file or module"]


def test_a_file_without_models_is_reported(tmp_path):
    f = tmp_path / "empty_models.py"
    f.write_text("x = 1\n")
    reg = load([str(f)], builtin=False, entry_points=False)
    assert reg.problems == [f"{f}: defines no gradcheck_suite.Model"]


def test_models_load_from_a_dotted_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(GOOD.format(name="from_module"))
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = load(["my_models"], builtin=False, entry_points=False)
    assert reg.names() == ["from_module"] and reg.asked_as("from_module") == "my_models"


def test_unknown_names_suggest_close_ones(registry):
    with pytest.raises(KeyError, match="did you mean mlp_relu"):
        registry.get("mlp_rleu")


def test_entry_points_are_loaded(monkeypatch):
    import importlib.metadata as md

    model = _model(name="from_entry_point")

    class EP:
        name, value = "mine", "pkg:model"

        def load(self):
            return model

    monkeypatch.setattr(md, "entry_points", lambda group: [EP()] if group == "gradcheck_suite.models" else [])
    reg = Registry()
    reg.load_entry_points()
    assert reg.names() == ["from_entry_point"] and reg.origin("from_entry_point") == "entry point mine = pkg:model"


def test_a_factory_returning_the_wrong_shape_is_an_error(case_of):
    import torch
    from gradcheck_suite import check_case

    m = _model(make_tensors=lambda dims, gen, dtype, scale: {"w": torch.ones(2), "x": torch.ones(dims["N"])})
    res = check_case(m, case_of(m, N=3))
    assert res.verdict == "error"
    assert res.problems == ["make_tensors gave w shape (2,), the record says (3,)"]


def test_domain_keeps_values_inside_their_bounds(case_of):
    import torch
    from gradcheck_suite import check_case
    from gradcheck_suite.check.case import build

    m = _model(forward=lambda p, d: ((p.w * torch.log(d.x)).sum(), None),
               backward=lambda p, d, c, g: {"w": g * torch.log(d.x)}, domain={"x": (0.0, None)})
    for scale in (1e-3, 1.0, 1e3):
        case = case_of(m, N=4, scale=scale, seed=9)
        _, d = build(m, case)
        assert bool((d.x > 0).all())
        assert check_case(m, case).verdict == "pass"


def test_model_files_never_import_hypothesis():
    from pathlib import Path

    import gradcheck_suite.models as models
    for f in Path(models.__path__[0]).glob("*.py"):
        assert "hypothesis" not in f.read_text(), f
