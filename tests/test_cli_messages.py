"""What a user sees when a command goes wrong in their own folder: through the real command."""
import json
import os
import re

import pytest

from tests.test_cli import ROOT, gcs, one_line

TYPO = """
from gradcheck_suite import Dim, Model
typo = Model(name="typo", dims={"N": Dim(1, 4, 4)}, param={"w": ("N",)},
             forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
"""

BROKEN = """
import a_package_that_is_not_installed
"""

SLOW = """
import time
from gradcheck_suite import Dim, Model

def forward(p, d):
    time.sleep(0.3)
    return (p.w ** 2).sum(), None

def stuck_forward(p, d):
    while True:
        time.sleep(0.05)

slow = Model(name="slow", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)}, forward=forward,
             backward=lambda p, d, c, g: {"w": 2 * g * p.w})
stuck = Model(name="stuck", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)}, forward=stuck_forward,
              backward=lambda p, d, c, g: {"w": 2 * g * p.w})
"""


def test_a_misspelled_field_is_named_with_the_nearest_one(tmp_path):
    (tmp_path / "typo.py").write_text(TYPO)
    r = gcs("check", "--models-from", "typo.py", "--examples", "2", cwd=tmp_path)
    assert r.returncode == 1
    one_line(r.stderr, "typo.py:3: unknown field 'param'; did you mean 'params'?")


def test_a_file_given_as_a_name_gets_the_option_it_needs(tmp_path):
    (tmp_path / "typo.py").write_text(TYPO)
    r = gcs("check", "typo.py", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "typo.py: not a model name; did you mean --models-from typo.py?")


def test_a_name_beside_a_file_that_failed_to_load_is_that_files_error(tmp_path):
    (tmp_path / "my_model.py").write_text(BROKEN)
    r = gcs("check", "my_other_model", "--models-from", "my_model.py", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 1
    one_line(r.stderr, "my_other_model: not found; my_model.py failed to load and may define it")
    assert "unknown model" not in r.stderr
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == 1


def test_an_unknown_dims_name_stops_before_any_work(tmp_path):
    r = gcs("check", "mlp_relu", "--dims", "N=4,D_inn=3", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 2
    one_line(r.stderr, "--dims D_inn: no selected model has such a dimension")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["models"] == [] and "mlp_relu" not in r.stdout


def test_init_out_a_folder_writes_into_it(tmp_path):
    (tmp_path / "my_models").mkdir()
    r = gcs("init", "numpy", "my_layer", "--out", "my_models", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "my_models" / "my_layer.py").exists()
    r = gcs("check", "my_layer", "--models-from", "my_models/my_layer.py", "--examples", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_off_a_terminal_a_slow_run_says_it_is_alive_and_a_timeout_names_the_code(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    env = {**os.environ, "GRADCHECK_SUITE_HEARTBEAT": "0.5"}
    r = gcs("check", "slow", "stuck", "--models-from", "slow.py", "--examples", "2", "--case-timeout", "1.5",
            cwd=tmp_path, env=env)
    assert r.returncode == 1
    assert "gradcheck-suite: still running [1/2] slow float64 cpu: case 1/2" in r.stderr
    assert "\r" not in r.stderr and "\x1b[" not in r.stderr
    assert "inside forward (slow.py:6)" in r.stdout
    assert "forward did not finish within 1.5 s (--case-timeout), inside stuck_forward (slow.py:11)" in \
        " ".join(r.stdout.split())


@pytest.mark.parametrize("name, source", [("mlp_no_mask", "examples/wrong.py"),
                                          ("p3_wrong_second", "tests/shipped/wrong_kinds.py")])
def test_the_table_shows_the_figure_the_message_shows(name, source):
    r = gcs("check", name, "--models-from", ROOT / source, "--examples", "10", cwd=ROOT)
    assert r.returncode == 1
    row = next(line for line in r.stdout.splitlines() if line.startswith(name))
    in_table = row.split()[6]               # the autograd column: the error over its tolerance
    flat = " ".join(r.stdout.split())

    def value(cell: str) -> float:
        return float("inf") if cell.startswith(">") else float(cell)

    in_message = max(re.findall(r"\(error/tolerance ([^)]+)\)", flat), key=value)
    assert in_table == in_message, (row, in_message)
