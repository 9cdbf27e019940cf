"""Shipped kinds end to end: the reproduce command works from the user's folder (a file
or a dotted module), `init` writes files that pass, and the pytest plugin checks them."""
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import flat, reproduce_lines
from tests.shipped import wrong_kinds

HERE = pathlib.Path(__file__).resolve().parent
CLI = str(pathlib.Path(sys.executable).parent / "gradcheck-suite")
FAILING = " ".join(wrong_kinds.EXPECTED)


def _run(argv, cwd):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def user_folder(tmp_path):
    """A user's project: a package holding the wrong models, and a plain file beside it."""
    shutil.copytree(HERE / "shipped", tmp_path / "userpkg")
    shutil.copy(HERE / "shipped" / "wrong_kinds.py", tmp_path / "wrong_kinds_file.py")
    return tmp_path


@pytest.mark.parametrize("target", ["userpkg.wrong_kinds", "wrong_kinds_file.py"])
def test_the_reproduce_command_of_each_kind_runs_the_same_case_from_the_users_folder(user_folder, target):
    first = _run([CLI, "check", *wrong_kinds.EXPECTED, "--models-from", target, "--examples", "10"], user_folder)
    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stdout + first.stderr
    commands = reproduce_lines(first.stdout)
    assert len(commands) == len(wrong_kinds.EXPECTED)
    for command, (name, (verdict, text)) in zip(commands, wrong_kinds.EXPECTED.items()):
        assert f"--models-from {target}" in command and text in flat(first.stdout)
        again = _run(shlex.split(command.replace("gradcheck-suite", CLI, 1)), user_folder)
        assert again.returncode == 1, again.stderr
        assert f"{name}: {verdict} — " in again.stdout and text in flat(again.stdout)
        assert reproduce_lines(again.stdout) == [command]          # the very same case


def test_a_hyperparameter_is_in_the_reproduce_command(tmp_path):
    (tmp_path / "strided.py").write_text((HERE.parent / "examples" / "conv1d.py").read_text().replace(
        '"b": gy.sum(dim=(0, 2))', '"b": gy.sum(dim=(0, 2)) * min(S, 2) / S'))   # wrong once the stride is 3
    out = _run([CLI, "check", "conv1d_strided", "--models-from", "strided.py", "--examples", "20"], tmp_path).stdout
    (command,) = reproduce_lines(out)
    assert "--hyper stride=3" in command
    again = _run(shlex.split(command.replace("gradcheck-suite", CLI, 1)), tmp_path)
    assert again.returncode == 1 and "the manual gradient of b disagrees" in flat(again.stdout)


@pytest.mark.parametrize("kind", ["model", "function", "custom-op", "numpy", "sharded"])
def test_init_writes_a_file_of_each_kind_that_passes_the_check(tmp_path, kind):
    name = f"my_{kind.replace('-', '_')}"
    made = _run([CLI, "init", kind, name], tmp_path)
    assert made.returncode == 0 and (tmp_path / f"{name}.py").exists()
    checked = _run([CLI, "check", name, "--models-from", f"{name}.py", "--examples", "10"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = _run([CLI, "init", kind, name], tmp_path)
    assert again.returncode == 2 and f"{name}.py already exists" in again.stderr
    bad = _run([CLI, "init", kind, "My-Op"], tmp_path)
    assert bad.returncode == 2 and "must be lower-case letters" in bad.stderr and "Traceback" not in bad.stderr


PLUGIN_TEST = """
def test_backward(gradcheck_target):
    gradcheck_target.check()
"""


def test_the_plugin_checks_functions_custom_ops_and_numpy_models(pytester):
    pytester.makepyfile(test_user_models=PLUGIN_TEST)
    examples = HERE.parent / "examples"
    for stem in ("legendre_p3", "custom_op_softplus", "numpy_two_layer"):
        shutil.copy(examples / f"{stem}.py", pytester.path / f"{stem}.py")
    shutil.copytree(HERE / "shipped", pytester.path / "userpkg")
    result = pytester.runpytest_subprocess(
        "--gradcheck-models-from", "legendre_p3.py", "--gradcheck-models-from", "custom_op_softplus.py",
        "--gradcheck-models-from", "numpy_two_layer.py", "--gradcheck-models-from", "userpkg.wrong_kinds",
        "--gradcheck-models", f"legendre_p3,scaled_softplus,numpy_two_layer,{','.join(wrong_kinds.EXPECTED)}",
        "--gradcheck-device", "cpu", "--gradcheck-examples", "6")
    result.assert_outcomes(passed=3, failed=len(wrong_kinds.EXPECTED))
    out = flat(result.stdout.str())
    for name, (verdict, text) in wrong_kinds.EXPECTED.items():
        assert f"{name}: {verdict} — " in out and text in out
        assert f"reproduce: gradcheck-suite check {name} --models-from userpkg.wrong_kinds" in out
    assert "Traceback" not in out
