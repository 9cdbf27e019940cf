"""check --isolate: a model that kills its process is its own error, and the others run."""
import json

from tests.test_cli import WRONG, gcs

CRASH = """
import ctypes
import os
from gradcheck_suite import Dim, Model

def segfault_forward(p, d):
    if p.w.numel() > 2:
        ctypes.string_at(0)          # reads address 0: the process dies with SIGSEGV
    return (p.w ** 2).sum(), None

def exit_backward(p, d, c, g):
    os._exit(3)

segv = Model(name="segv", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",)}, forward=segfault_forward,
             backward=lambda p, d, c, g: {"w": 2 * g * p.w})
quits = Model(name="quits", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",)},
              forward=lambda p, d: ((p.w ** 2).sum(), None), backward=exit_backward)
fine = Model(name="fine", dims={"N": Dim(1, 6, 8)}, params={"w": ("N",)},
             forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
"""


def test_a_crash_is_that_models_error_and_the_others_run(tmp_path):
    (tmp_path / "crash.py").write_text(CRASH)
    r = gcs("check", "--models-from", "crash.py", "--isolate", "--examples", "5", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    verdicts = {m["name"]: (m["verdict"], " ".join(m["problems"])) for m in doc["models"]}
    assert verdicts["fine"] == ("pass", "")
    assert verdicts["segv"][0] == "error" and "killed by SIGSEGV, inside segfault_forward (crash.py:8)" in \
        verdicts["segv"][1]
    assert verdicts["quits"][0] == "error" and "exited with code 3" in verdicts["quits"][1]
    assert "1 passed, 0 failed, 2 errors" in r.stdout and "Traceback" not in r.stderr


def test_isolated_runs_report_what_in_process_runs_report(tmp_path):
    (tmp_path / "w.py").write_text(WRONG.read_text())
    reports = []
    for extra in ([], ["--isolate"]):
        r = gcs("check", "affine_scalar", "mlp_no_mask", "--models-from", "w.py", *extra, "--examples", "5",
                "--json", "r.json", cwd=tmp_path)
        assert r.returncode == 1
        doc = json.loads((tmp_path / "r.json").read_text())
        reports.append([(m["name"], m["verdict"], m["failure"] and m["failure"]["message"]) for m in doc["models"]])
    assert reports[0] == reports[1]


TEST_FILE = """
def test_backward(gradcheck_target):
    gradcheck_target.check()
"""


def test_under_pytest_xdist_a_crash_is_that_tests_failure_and_the_others_run(pytester):
    pytester.makepyfile(crash_models=CRASH, test_grads=TEST_FILE)
    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--gradcheck-models-from", "crash_models.py",
                                           "--gradcheck-models", "segv,fine", "--gradcheck-device", "cpu",
                                           "--gradcheck-examples", "5")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*worker*crashed while running*test_backward[[]segv-cpu-float64[]]*"])
