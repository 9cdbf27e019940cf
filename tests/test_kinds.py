"""The ways to hold a backward are registered in one place, and everything reads that place:
the record's validation, ``init``'s choices and templates, the factories' exports."""
import subprocess
import sys

import pytest

import gradcheck_suite
from gradcheck_suite import Dim, Model, SpecError, numpy_model, op_model
from gradcheck_suite.commands import scaffold
from gradcheck_suite.commands import main
from gradcheck_suite.kinds import FACTORIES, KINDS, NAMES, kind_holding, kind_named, spelled


def test_each_kind_has_one_name_and_its_aliases_name_no_other():
    assert NAMES == ("model", "function", "custom op", "numpy", "sharded")
    spellings = [s for k in KINDS for s in (k.name, *k.aliases)]
    assert len(spellings) == len(set(spellings))
    assert spelled("custom-op") == "custom op" and kind_named("custom-op") is kind_named("custom op")
    with pytest.raises(KeyError, match="unknown kind 'pipelined'; the kinds are model, function, custom op, numpy, "
                                       "sharded"):
        kind_named("pipelined")


def test_the_registry_loads_without_torch():
    code = "import sys, gradcheck_suite.kinds, gradcheck_suite.record.spec; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False", r.stderr


def test_every_factory_is_exported_from_the_package():
    assert set(FACTORIES) == {"op_model", "numpy_model", "sharded_model"}
    assert set(FACTORIES) <= set(gradcheck_suite.__all__)
    assert gradcheck_suite.op_model is op_model and gradcheck_suite.numpy_model is numpy_model


def test_a_record_names_only_a_registered_kind():
    with pytest.raises(SpecError, match="field 'kind': 'custom-op' is not one of model, function, custom op, numpy, sharded"):
        Model(name="m", dims={"N": Dim(1, 2, 2)}, params={"w": ("N",)}, forward=lambda p, d: (p.w.sum(), None),
              backward=lambda p, d, c, g: {"w": g.expand(p.w.shape)}, kind="custom-op")


def test_each_record_says_how_it_holds_its_backward():
    import torch

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    dims, inputs = {"N": Dim(1, 3, 3)}, {"x": ("N",)}
    fn = op_model(Square, name="sq", dims=dims, inputs=inputs, reference=lambda x: x * x)
    wrapped = op_model(lambda x: Square.apply(x), name="sq_wrapped", dims=dims, inputs=inputs, reference=lambda x: x * x)
    layers = numpy_model(lambda x: (x * x, x), lambda dout, x: 2 * x * dout, name="sq_np", dims=dims, inputs=inputs)
    assert (fn.kind, wrapped.kind, layers.kind) == ("function", "function", "numpy")
    assert fn.held_as is kind_named("function") and layers.held_as.numpy_arrays and layers.two_way
    assert not fn.held_as.numpy_arrays and not fn.two_way and not fn.held_as.plain_torch
    assert kind_holding(torch.ops.aten.mul, "op_model").name == "custom op"    # a torch.library op
    assert kind_holding(Square, "op_model").name == "function"
    assert kind_holding(3, "op_model") is None


@pytest.mark.parametrize("spelling", ["custom op", "custom-op"])
def test_init_takes_the_one_spelling_and_the_old_one(tmp_path, spelling, capsys):
    assert main(["init", spelling, "my_op", "--out", str(tmp_path) + "/"]) == 0
    assert (tmp_path / "my_op.py").read_text() == scaffold.render("custom op", "my_op")
    assert "torch.library.custom_op" in (tmp_path / "my_op.py").read_text()


def test_init_offers_every_registered_kind():
    assert scaffold.KINDS == NAMES
    for name in NAMES:
        assert "my_code" in scaffold.render(name, "my_code")
