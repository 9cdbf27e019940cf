"""The package's public face: every name in ``gradcheck_suite.__all__`` resolves, what users'
code imports from the top keeps working, and ``import gradcheck_suite`` stays light (no torch)."""
import subprocess
import sys

import gradcheck_suite


def test_every_public_name_resolves_to_its_internal_definition():
    from gradcheck_suite import check
    from gradcheck_suite.run import registry, runner

    for name in gradcheck_suite.__all__:
        assert getattr(gradcheck_suite, name) is not None, name
    assert gradcheck_suite.run_model is runner.run_model
    assert gradcheck_suite.load is registry.load
    assert (gradcheck_suite.PASS, gradcheck_suite.FAIL, gradcheck_suite.ERROR) == (check.PASS, check.FAIL, check.ERROR)
    assert {gradcheck_suite.DISAGREE, gradcheck_suite.NONDIFF, gradcheck_suite.SKIPPED} == \
        {check.DISAGREE, check.NONDIFF, check.SKIPPED}
    assert set(gradcheck_suite.__all__) <= set(dir(gradcheck_suite))


def test_a_star_import_gives_every_public_name():
    space: dict = {}
    exec("from gradcheck_suite import *", space)
    assert set(gradcheck_suite.__all__) <= set(space)


def test_an_unknown_name_is_an_attribute_error():
    try:
        gradcheck_suite.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("gradcheck_suite.no_such_name resolved")


def test_importing_the_package_does_not_import_torch():
    code = ("import sys, gradcheck_suite; from gradcheck_suite import Dim, Model, SpecError, Tensors; "
            "print('torch' in sys.modules, 'hypothesis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
