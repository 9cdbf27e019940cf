"""The command line agrees with itself: every command takes model names in the same forms,
no option is abbreviated, a file reached twice is read once, ``train --out`` and the
settings are checked before any work, ``init`` never writes a second model of a name, and
``list`` puts the project's own models before the built-in examples.  Through the real
command (and pytest through ``pytester``)."""
import json
import re
from pathlib import Path

import pytest

from tests.test_cli import gcs, one_line
from tests.test_bench_cli import bench

ROOT = Path(__file__).resolve().parent.parent

SQUARE = """
from gradcheck_suite import Dim, Model

square = Model(name="square", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",)},
               forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
"""

CUBE = SQUARE.replace("square", "cube").replace("p.w ** 2", "p.w ** 3").replace("2 * g * p.w", "3 * g * p.w ** 2")


def checked(path: Path) -> list[str]:
    return [m["name"] for m in json.loads(path.read_text())["models"]]


# -- one form of names everywhere ------------------------------------------------------

def test_models_is_never_read_as_models_from(tmp_path):
    r = gcs("check", "--models", "affine_scalar", "--examples", "2", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert checked(tmp_path / "r.json") == ["affine_scalar"]


@pytest.mark.parametrize("argv,token", [(["check", "--models-fro", "x.py"], "--models-fro"),
                                        (["check", "--model", "affine_scalar"], "--model"),
                                        (["check", "affine_scalar", "--exam", "2"], "--exam"),
                                        (["list", "--built"], "--built"),
                                        (["train", "affine_scalar", "--step", "2"], "--step"),
                                        (["--vers", "list"], "--vers")])
def test_no_option_is_abbreviated(tmp_path, argv, token):
    r = gcs(*argv, "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert token in one_line(r.stderr, "unrecognized arguments")
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 2


def test_bench_refuses_an_abbreviation(tmp_path):
    code, _, err = bench("--model", "affine_scalar", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert code == 2 and "unrecognized arguments: --model" in err and len(err.strip().splitlines()) == 1


def test_check_takes_names_comma_lists_and_repeated_models_mixed(tmp_path):
    r = gcs("check", "affine_scalar,scalar_linear", "--examples", "1", "linear_layer", "--models", "deep_linear",
            "--models", "scalar_linear,linear_regression", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert checked(tmp_path / "r.json") == ["affine_scalar", "scalar_linear", "linear_layer", "deep_linear",
                                            "linear_regression"]


def test_an_unknown_name_in_a_comma_list_is_that_name(tmp_path):
    r = gcs("check", "affine_scalar,affine_scalr", "--examples", "1", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "unknown model 'affine_scalr'; did you mean affine_scalar?")


def test_train_and_list_take_the_same_forms(tmp_path):
    r = gcs("train", "affine_scalar,scalar_linear", "--models", "affine_scalar", "--steps", "2",
            "--json", "t.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert checked(tmp_path / "t.json") == ["affine_scalar", "scalar_linear"]
    r = gcs("list", "scalar_linear,affine_scalar", "--models", "linear_layer", "--json", "l.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert checked(tmp_path / "l.json") == ["scalar_linear", "affine_scalar", "linear_layer"]


def test_bench_takes_the_same_forms(tmp_path):
    code, _, err = bench("--quick", "--max-time", "0.03", "--no-plots", "scalar_linear", "--out", "r",
                         "--models", "affine_scalar", cwd=tmp_path)
    assert code == 0, err
    text = (tmp_path / "r" / "report.md").read_text().split("## Details")[0]
    rows = {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")} - {"model", "---"}
    assert rows == {"scalar_linear", "affine_scalar"}
    code, _, err = bench("affine_scalar,affine_scalr", "--out", "r2", cwd=tmp_path)
    assert code == 2 and "unknown model 'affine_scalr'" in err and len(err.strip().splitlines()) == 1


TEST_FILE = """
def test_backward(gradcheck_target):
    gradcheck_target.check()
"""


def test_pytest_takes_comma_lists_and_repeats_and_no_abbreviation(pytester):
    pytester.makepyfile(test_grads=TEST_FILE)
    result = pytester.runpytest("--collect-only", "-q", "--gradcheck-device", "cpu", "--gradcheck-models",
                                "affine_scalar,scalar_linear", "--gradcheck-models", "linear_layer,affine_scalar")
    ids = re.findall(r"test_backward\[(\w+)-cpu-float64\]", result.stdout.str())
    assert ids == ["affine_scalar", "scalar_linear", "linear_layer"]
    result = pytester.runpytest("--collect-only", "-q", "--gradcheck-model", "affine_scalar")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --gradcheck-model*"])


# -- a file reached twice ---------------------------------------------------------------

@pytest.mark.parametrize("targets", [["mine/square.py", "mine"], ["mine", "mine/square.py"],
                                     ["mine", "./mine/"], ["mine/square.py", "mine/../mine/square.py"]])
def test_a_file_reached_twice_is_read_once(tmp_path, targets):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "square.py").write_text(SQUARE)
    (tmp_path / "mine" / "cube.py").write_text(CUBE)
    argv = [a for t in targets for a in ("--models-from", t)]
    r = gcs("check", *argv, "--examples", "2", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "duplicate" not in r.stderr
    assert sorted(checked(tmp_path / "r.json")) == (["cube", "square"] if "mine" in targets else ["square"])


def test_a_file_reached_twice_through_the_settings_or_pytest_is_read_once(tmp_path, pytester):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "square.py").write_text(SQUARE)
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck-suite]\nmodels-from = ["mine/", "mine/square.py"]\n')
    r = gcs("check", "--examples", "2", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert checked(tmp_path / "r.json") == ["square"]
    pytester.makepyfile(test_grads=TEST_FILE)
    (pytester.path / "mine").mkdir()
    (pytester.path / "mine" / "square.py").write_text(SQUARE)
    result = pytester.runpytest("--gradcheck-device", "cpu", "--gradcheck-examples", "2",
                                "--gradcheck-models-from", "mine/square.py", "--gradcheck-models-from", "mine")
    result.assert_outcomes(passed=1)


def test_two_files_that_define_one_name_are_still_a_duplicate(tmp_path):
    (tmp_path / "a.py").write_text(SQUARE)
    (tmp_path / "b.py").write_text(SQUARE)
    r = gcs("check", "--models-from", "a.py", "--models-from", "b.py", "--examples", "2", cwd=tmp_path)
    assert r.returncode == 1
    line = one_line(r.stderr, "duplicate name")
    assert "a.py" in line and "b.py" in line


# -- train --out, before any training ----------------------------------------------------

@pytest.mark.parametrize("out,wanted", [("a_file", "is a file, not a folder"),
                                        ("a_file/plots", "cannot make the folder")])
def test_train_out_that_cannot_be_written_is_refused_before_training(tmp_path, out, wanted):
    (tmp_path / "a_file").write_text("x")
    r = gcs("train", "affine_scalar", "--steps", "2", "--out", out, "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, f"--out {out}: {wanted}")
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["exit_code"] == 2 and doc["models"] == [] and "affine_scalar" not in r.stdout


def test_train_out_in_a_folder_to_be_made_is_made(tmp_path):
    pytest.importorskip("matplotlib")
    r = gcs("train", "affine_scalar", "--steps", "2", "--out", "new/plots", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "new" / "plots" / "train.png").is_file()


# -- settings named where they are written -------------------------------------------------

def test_a_bad_dtype_in_the_settings_is_named_as_a_setting(tmp_path, pytester):
    settings = '[tool.gradcheck-suite]\nbuiltin = true\ndtypes = ["float64", "float33"]\n'
    (tmp_path / "pyproject.toml").write_text(settings)
    r = gcs("check", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 2
    line = one_line(r.stderr, f"{tmp_path / 'pyproject.toml'}: [tool.gradcheck-suite]: dtypes: 'float33' is not one "
                              "of float64, float32, float16, bfloat16, complex64, complex128; did you mean 'float32'?")
    assert "--dtype" not in line
    pytester.makepyfile(test_grads=TEST_FILE)
    (pytester.path / "pyproject.toml").write_text(settings)
    result = pytester.runpytest("--gradcheck-device", "cpu")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*[[]tool.gradcheck-suite[]]: dtypes: 'float33' is not one of*"])
    assert "--gradcheck-dtype" not in result.stdout.str()


# -- init never writes a second model of a name ---------------------------------------------

def test_init_refuses_the_name_of_a_built_in_example(tmp_path):
    r = gcs("init", "model", "mlp_relu", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    one_line(r.stderr, "a built-in example model named 'mlp_relu' already exists")
    assert not (tmp_path / "mlp_relu.py").exists()


def test_init_refuses_the_name_of_a_project_model(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "shapes.py").write_text(SQUARE)
    r = gcs("init", "function", "square", "--out", "mine/", cwd=tmp_path)        # in the folder it writes to
    assert r.returncode == 2
    one_line(r.stderr, f"a model named 'square' already exists ({Path('mine') / 'shapes.py'}); choose another NAME")
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck-suite]\nmodels-from = "mine/"\n')
    r = gcs("init", "numpy", "square", "--out", "elsewhere.py", cwd=tmp_path)    # in the project's models
    assert r.returncode == 2 and not (tmp_path / "elsewhere.py").exists()
    one_line(r.stderr, "a model named 'square' already exists")
    r = gcs("init", "model", "circle", "--out", "mine/", cwd=tmp_path)           # a new name is written
    assert r.returncode == 0, r.stderr
    again = gcs("check", "--examples", "2", "--json", "r.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(checked(tmp_path / "r.json")) == ["circle", "square"]


# -- list: the project's models first ----------------------------------------------------

def test_list_shows_the_projects_models_and_leaves_the_examples_out_unless_asked(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "square.py").write_text(SQUARE)
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck-suite]\nmodels-from = "mine/"\n')
    r = gcs("list", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert checked(tmp_path / "r.json") == ["square"] and "built-in" not in r.stdout
    r = gcs("list", "--builtin", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("square ")
    marker = lines.index("built-in examples:")
    assert marker > 0 and lines[marker + 1].startswith("affine_scalar ")
    rows = json.loads((tmp_path / "r.json").read_text())["models"]
    assert rows[0]["name"] == "square" and rows[0]["builtin"] is False
    assert len(rows) > 1 and all(row["builtin"] for row in rows[1:])


def test_list_with_nothing_configured_marks_the_examples_and_says_how_to_configure(tmp_path):
    r = gcs("list", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no models of the project's own: add [tool.gradcheck-suite] models-from")
    assert "built-in examples, checked only with --builtin or by name:" in r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 80
    assert all(row["builtin"] for row in json.loads((tmp_path / "r.json").read_text())["models"])


def test_an_unknown_name_lists_the_projects_models_before_the_examples(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "square.py").write_text(SQUARE)
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck-suite]\nmodels-from = "mine/"\n')
    r = gcs("check", "rotary", cwd=tmp_path)
    assert r.returncode == 2
    line = one_line(r.stderr, "unknown model 'rotary'")
    assert "known models: square; built-in examples: affine_scalar," in line


# -- the README's install lines ---------------------------------------------------------

def test_every_install_line_of_the_readme_keeps_the_cpu_build_of_torch():
    readme = (ROOT / "README.md").read_text()
    lines = [line for line in readme.splitlines() if re.search(r"\bpip install\b", line)]
    assert len(lines) >= 5
    for line in lines:
        assert "-c " in line and "constraints-cpu.txt" in line, line


def test_the_readme_stays_within_300_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300
