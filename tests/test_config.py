"""Configure once: ``[tool.gradcheck-suite]`` in a user's ``pyproject.toml``, read by the
command line and the pytest plugin from any folder of the project."""
import json
import shlex

import pytest

from tests.test_cli import WRONG, gcs, one_line

GOOD = """
from gradcheck_suite import Dim, Model

square = Model(name="square", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",)},
               forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
"""

TEST_FILE = """
def test_backward(gradcheck_target):
    gradcheck_target.check()
"""


@pytest.fixture
def project(tmp_path):
    """A user's repository: models in a folder of their own, tests, and the settings."""
    (tmp_path / "grad_models").mkdir()
    (tmp_path / "grad_models" / "good.py").write_text(GOOD)
    (tmp_path / "grad_models" / "wrong.py").write_text(WRONG.read_text())
    (tmp_path / "src" / "deep").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "mine"\nversion = "0"\n\n'
        '[tool.gradcheck-suite]\nmodels-from = "grad_models/"\nmodels = ["square", "mlp_no_mask"]\n')
    return tmp_path


def test_the_cli_checks_the_projects_models_from_any_of_its_folders(project):
    for cwd in (project, project / "src" / "deep"):
        r = gcs("check", "--examples", "5", "--json", "r.json", cwd=cwd)
        assert r.returncode == 1, r.stderr
        doc = json.loads((cwd / "r.json").read_text())
        assert [m["name"] for m in doc["models"]] == ["square", "mlp_no_mask"]       # no built-in example
        assert [m["verdict"] for m in doc["models"]] == ["pass", "fail"]


def test_a_reproduce_command_works_from_any_folder_of_the_project(project):
    r = gcs("check", "--examples", "5", "--json", "r.json", cwd=project)
    command = json.loads((project / "r.json").read_text())["models"][1]["reproduce"]
    assert "--models-from" not in command
    again = gcs(*shlex.split(command)[1:], cwd=project / "src" / "deep")
    assert again.returncode == 1 and "mlp_no_mask: fail" in again.stdout


def test_the_command_line_wins_over_the_settings(project):
    r = gcs("check", "square", "--examples", "3", "--json", "r.json", cwd=project / "src")
    assert r.returncode == 0
    assert [m["name"] for m in json.loads((project / "src" / "r.json").read_text())["models"]] == ["square"]


def test_builtin_true_brings_the_example_models_along(project):
    text = (project / "pyproject.toml").read_text().replace('models = ["square", "mlp_no_mask"]\n', "builtin = true\n")
    (project / "pyproject.toml").write_text(text)
    r = gcs("list", "--json", "r.json", cwd=project)
    names = [m["name"] for m in json.loads((project / "r.json").read_text())["models"]]
    assert "mlp_relu" in names and "square" in names


def test_a_misspelled_setting_is_a_usage_error_naming_the_file_and_the_key(project):
    text = (project / "pyproject.toml").read_text().replace("models-from", "model-from")
    (project / "pyproject.toml").write_text(text)
    r = gcs("check", cwd=project / "src")
    assert r.returncode == 2
    one_line(r.stderr, "pyproject.toml: [tool.gradcheck-suite]: unknown key 'model-from'; did you mean 'models-from'?")


def test_plain_pytest_checks_the_projects_models(project, pytester):
    pytester.chdir()
    for path in project.rglob("*"):
        target = pytester.path / path.relative_to(project)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_text(path.read_text())
    pytester.makepyfile(test_grads=TEST_FILE)
    result = pytester.runpytest("--gradcheck-device", "cpu", "--gradcheck-examples", "5")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "test_backward[square-cpu-float64] PASSED" in out or "1 passed" in out
    assert "mlp_relu" not in out
    result.stdout.fnmatch_lines(["*reproduce: gradcheck-suite check mlp_no_mask --dims*"])


def test_with_nothing_configured_the_cli_says_so_and_names_still_work(tmp_path):
    r = gcs("check", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "no models configured: add [tool.gradcheck-suite] models-from")
    r = gcs("check", "affine_scalar", "--examples", "2", cwd=tmp_path)        # a built-in example, asked by name
    assert r.returncode == 0, r.stderr
    (tmp_path / "good.py").write_text(GOOD)
    r = gcs("check", "--models-from", "good.py", "--examples", "2", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [m["name"] for m in json.loads((tmp_path / "r.json").read_text())["models"]] == ["square"]
