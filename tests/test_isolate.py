"""check --isolate: a model that kills its process is its own error, and the others run."""
import json

import pytest

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


def test_isolation_is_the_default_on_the_cpu(tmp_path):
    (tmp_path / "crash.py").write_text(CRASH)
    r = gcs("check", "--models-from", "crash.py", "--examples", "5", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 1
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["isolated"] is True
    assert {m["name"]: m["verdict"] for m in doc["models"]} == {"segv": "error", "quits": "error", "fine": "pass"}
    # a single model too
    r = gcs("check", "fine", "--models-from", "crash.py", "--examples", "5", "--json", "one.json", cwd=tmp_path)
    assert r.returncode == 0 and json.loads((tmp_path / "one.json").read_text())["isolated"] is True


@pytest.mark.parametrize("name,how", [("quits", "exited with code 3"), ("segv", "killed by SIGSEGV")])
def test_a_single_model_that_kills_its_process_gets_a_line_a_documented_exit_code_and_the_json(tmp_path, name, how):
    (tmp_path / "crash.py").write_text(CRASH)
    r = gcs("check", name, "--models-from", "crash.py", "--examples", "5", "--json", "r.json", cwd=tmp_path)
    assert r.returncode == 1, (r.returncode, r.stderr)          # docs/cli.md: 1, a model failed or errored
    details = [line for line in r.stdout.splitlines() if line.startswith(f"{name}: ")]
    assert len(details) == 1 and "the model's process" in details[0], r.stdout
    assert "0 passed, 0 failed, 1 error" in r.stdout and "Traceback" not in r.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["exit_code"] == 1 and doc["isolated"] is True
    assert [(m["name"], m["verdict"]) for m in doc["models"]] == [(name, "error")]
    assert how in " ".join(doc["models"][0]["problems"])
    # --no-isolate keeps every model here: the segfault takes the whole command down
    r = gcs("check", "fine", "segv", "--no-isolate", "--models-from", "crash.py", "--examples", "5",
            "--json", "none.json", cwd=tmp_path)
    assert (r.returncode < 0 or r.returncode > 128) and not (tmp_path / "none.json").exists()


def test_isolated_runs_report_what_in_process_runs_report(tmp_path):
    (tmp_path / "w.py").write_text(WRONG.read_text())
    reports = []
    for extra in (["--no-isolate"], ["--isolate"]):
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


SPINS = """
import os, time
from gradcheck_suite import Dim, Model

def spin_forward(p, d):
    with open(os.environ["SPIN_PID"], "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.1)

spins = Model(name="spins", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)}, forward=spin_forward,
              backward=lambda p, d, c, g: {"w": g})
fine = Model(name="fine", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)},
             forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": 2 * g * p.w})
"""


def test_a_child_goes_when_the_command_is_killed(tmp_path):
    """A CI job's timeout kills the command outright: its model's child must not live on
    holding the output pipe open."""
    import os
    import signal
    import subprocess
    import time

    from tests.test_cli import COMMAND

    (tmp_path / "spin.py").write_text(SPINS)
    pid_file = tmp_path / "child.pid"
    proc = subprocess.Popen([*COMMAND, "check", "fine", "spins", "--models-from", "spin.py", "--examples", "3",
                             "--case-timeout", "0"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "SPIN_PID": str(pid_file)})
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert child != proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)        # the pipe closes: nothing holds it any more
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read().split()[2]
