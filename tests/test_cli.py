"""The command line, run as a user runs it: the real ``gradcheck-suite`` command in a
subprocess.  Exit codes, one line per mistake, the JSON report whatever happens, and
output that fits 80 columns."""
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WRONG = ROOT / "examples" / "wrong.py"
_SCRIPT = Path(sys.executable).with_name("gradcheck-suite")
COMMAND = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "gradcheck_suite"]
WAIT = 300  # seconds: a safety net for a command that hangs, never a measurement

# Models that hang in one phase each.  Each writes a file named after itself when it
# starts to hang, so a test knows when to act without guessing at times.
HANGS = """
import os, pathlib, time
import torch
from gradcheck_suite import Dim, Model

def _hang(name):
    pathlib.Path(os.environ.get("HANG_MARKS", "."), name).touch()
    time.sleep(3600)

def _spin(name):
    pathlib.Path(os.environ.get("HANG_MARKS", "."), name).touch()
    while True:          # a Python loop: abandoning the case stops it
        pass

def _forward(p, d):
    return (p.w * d.x).sum(), None

def _backward(p, d, cache, g):
    return {"w": g * d.x}

def _hang_forward(p, d):
    _hang("hang_forward")

def _hang_backward(p, d, cache, g):
    _spin("hang_backward")

def _hang_autograd(p, d):    # in autograd's backward pass through the forward
    out, cache = _forward(p, d)
    if out.requires_grad:
        out.register_hook(lambda g: _hang("hang_autograd"))
    return out, cache

_calls = [0]
def _hang_fd(p, d):      # its second forward without autograd is the finite differences'
    if not torch.is_grad_enabled():
        _calls[0] += 1
        if _calls[0] >= 2:
            _spin("hang_fd")
    return _forward(p, d)

def _model(name, forward=_forward, backward=_backward):
    return Model(name=name, dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)}, data={"x": ("N",)},
                 forward=forward, backward=backward)

hang_forward = _model("hang_forward", forward=_hang_forward)
hang_backward = _model("hang_backward", backward=_hang_backward)
hang_autograd = _model("hang_autograd", forward=_hang_autograd)
hang_fd = _model("hang_fd", forward=_hang_fd)
"""


def gcs(*args, cwd=None, env=None, **streams) -> subprocess.CompletedProcess:
    """Run ``gradcheck-suite ARGS`` to the end; stdout and stderr captured unless given."""
    if not streams:
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.run([*COMMAND, *map(str, args)], text=True, cwd=cwd, env=env, timeout=WAIT, **streams)


def one_line(stderr: str, text: str) -> str:
    """The one stderr line that holds ``text``; no traceback anywhere."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if text in line]
    assert len(lines) == 1, stderr
    return lines[0]


def flat(text: str) -> str:
    """Text with its lines wrapped back together, for messages wrapped at 80 columns."""
    return " ".join(text.split())


def report(path) -> dict:
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def names(doc: dict) -> list[str]:
    return [m["name"] for m in doc["models"]]


@pytest.fixture
def hangs(tmp_path):
    f = tmp_path / "hangs.py"
    f.write_text(HANGS)
    marks = tmp_path / "marks"
    marks.mkdir()
    return f, {**os.environ, "HANG_MARKS": str(marks)}, marks


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert proc.poll() is None, f"the command ended before {path.name} ran"
        assert time.monotonic() < deadline, f"{path.name} never started"
        time.sleep(0.05)


def available(fd: int) -> str:
    """What a pipe holds now, without waiting for more."""
    data = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode()


# -- what already worked -------------------------------------------------------------

def test_check_all_built_in_models_passes(tmp_path):
    r = gcs("check", "--examples", "3", "--json", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    assert "9 passed, 0 failed" in r.stdout
    doc = report(tmp_path / "r.json")
    assert doc["exit_code"] == 0 and doc["problems"] == [] and doc["interrupted"] is False
    assert len(doc["models"]) == 9
    row = doc["models"][0]
    assert set(row) >= {"name", "verdict", "counts", "worst_rel_err", "reproduce", "failure", "seconds"}
    assert row["verdict"] == "pass" and row["counts"]["checked"] >= 1
    # three cases reach the first corners: the low ends at scale 1e-3, the high ends at 1e3
    assert row["coverage"]["scales"][0] == 1e-3 and row["coverage"]["scales"][-1] == 1e3
    mlp = next(r for r in doc["models"] if r["name"] == "mlp_relu")
    assert mlp["coverage"]["sizes"]["N"][0] == 1 and mlp["coverage"]["sizes"]["N"][-1] == 32


def test_a_wrong_backward_fails_with_the_element_and_a_command_that_reproduces_it(tmp_path):
    r = gcs("check", "mlp_no_mask", "--models-from", WRONG, "--examples", "20", "--json", tmp_path / "r.json")
    assert r.returncode == 1
    assert "mlp_no_mask: fail — the manual gradient of w1 disagrees with autograd and finite differences" \
        in flat(r.stdout)
    assert "index" in r.stdout and "finite diff" in r.stdout
    model = report(tmp_path / "r.json")["models"][0]
    assert model["verdict"] == "fail" and model["failure"]["failing"] == ["w1"]
    assert model["failure"]["parameters"]["w1"]["worst"][0]["finite_diff"] is not None
    command = model["reproduce"]
    assert f"--models-from {WRONG}" in command and "--seed" in command and "--dims" in command
    # the command reproduces exactly that case, and so does the wrapped one the text shows
    again = gcs(*shlex.split(command)[1:], "--json", tmp_path / "again.json")
    assert again.returncode == 1
    case = report(tmp_path / "again.json")["models"][0]
    assert case["failure"]["case"] == model["failure"]["case"] and case["counts"]["checked"] == 1
    shown = r.stdout[r.stdout.index("reproduce:"):].split("\n\n")[0].removeprefix("reproduce:")
    assert shlex.split(shown.replace("\\\n", " ")) == shlex.split(command)


def test_dims_may_go_past_the_generated_range_to_the_seed_size():
    r = gcs("check", "mlp_no_mask", "--models-from", WRONG, "--dims", "N=64,D_in=1000,H=100,D_out=10",
            "--seed", "0", "--scale", "1")
    assert r.returncode == 1
    assert "dims N=64, D_in=1000, H=100, D_out=10" in r.stdout


def test_unknown_names_and_missing_files_are_usage_errors_and_the_others_still_run(tmp_path):
    missing = tmp_path / "missing.py"
    r = gcs("check", "mlp_rleu", "affine_scalar", "--models-from", missing, "--examples", "2",
            "--json", tmp_path / "r.json")
    assert r.returncode == 2
    one_line(r.stderr, "unknown model 'mlp_rleu'; did you mean mlp_relu")
    one_line(r.stderr, f"{missing}: no such file or module")
    assert re.search(r"^affine_scalar .* pass ", r.stdout, re.M)
    assert "1 passed, 0 failed, 2 usage errors" in r.stdout
    doc = report(tmp_path / "r.json")
    assert names(doc) == ["affine_scalar"] and doc["exit_code"] == 2


@pytest.mark.parametrize("args, message", [
    (["--dims", "N"], "'N' is not K=V"),
    (["--dims", "N=x"], "N='x' is not a whole number"),
    (["--dims", "N=0"], "N=0 must be at least 1"),
    (["--dtype", "float8"], "--dtype 'float8' is not one of float64"),
    (["--device", "tpu"], "--device 'tpu': use cpu, cuda or cpu,cuda"),
    (["--examples", "0"], "--examples 0: must be a whole number of at least 1"),
    (["--examples", "many"], "--examples many: must be a whole number of at least 1"),
    (["--scale", "0"], "--scale 0: must be a positive finite number"),
    (["--scale", "inf"], "--scale inf: must be a positive finite number"),
    (["--case-timeout", "-1"], "--case-timeout -1: must be seconds, 0 for no limit"),
    (["--threads", "0"], "--threads 0: must be a whole number of at least 1"),
    (["--profile", "forever"], "argument --profile: invalid choice: 'forever'"),
])
def test_bad_options_are_one_line_and_nothing_runs(tmp_path, args, message):
    r = gcs("check", "affine_scalar", *args, "--json", tmp_path / "r.json")
    assert r.returncode == 2
    line = one_line(r.stderr, message)
    assert line.startswith("gradcheck-suite: error: ") and len(r.stderr.splitlines()) == 1
    assert "affine_scalar" not in r.stdout
    doc = report(tmp_path / "r.json")
    assert doc["exit_code"] == 2 and doc["models"] == [] and message in doc["problems"][0]


def test_a_model_file_that_raises_is_a_message_not_a_traceback(tmp_path):
    f = tmp_path / "boom.py"
    f.write_text("raise ValueError('bad config')\n")
    r = gcs("check", "affine_scalar", "--models-from", f, "--examples", "2")
    assert r.returncode == 1
    one_line(r.stderr, f"model error: {f}:1: the model file raised ValueError: bad config")
    verbose = gcs("check", "affine_scalar", "--models-from", f, "--examples", "2", "--verbose")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_a_duplicate_name_is_a_model_error_naming_both_files(tmp_path):
    f = tmp_path / "dup.py"
    f.write_text(WRONG.read_text().replace('"mlp_no_mask"', '"affine_scalar"'))
    r = gcs("check", "affine_scalar", "--models-from", f, "--examples", "2")
    assert r.returncode == 1
    line = one_line(r.stderr, "duplicate name")
    assert str(f) in line and "gradcheck_suite/models/affine_scalar.py" in line


def test_list_shows_every_model_with_its_dims(tmp_path):
    r = gcs("list", "--json", tmp_path / "list.json")
    assert r.returncode == 0
    assert "mlp_relu" in r.stdout and "D_in∈[1,40] bench 1000" in r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 80
    assert {m["name"] for m in report(tmp_path / "list.json")["models"]} >= {"mlp_relu", "linear_layer"}


def test_an_error_verdict_exits_1_with_the_broken_contract(tmp_path):
    f = tmp_path / "contract.py"
    f.write_text(WRONG.read_text().replace('return {"w1"', 'return {"w0"').replace('"mlp_no_mask"', '"bad_keys"'))
    r = gcs("check", "bad_keys", "--models-from", f, "--examples", "3")
    assert r.returncode == 1
    assert ("bad_keys: error — backward's gradients: missing w1; unexpected w0 (expected exactly w1, w2)"
            in flat(r.stdout))
    assert re.search(r"^bad_keys .* - +- +ERROR ", r.stdout, re.M)   # nothing was compared


def test_against_an_all_zero_gradient_errors_stay_finite_and_the_json_strict(tmp_path):
    f = tmp_path / "flat.py"
    f.write_text(
        "import torch\nfrom gradcheck_suite import Dim, Model\n"
        "model = Model(name='flat', dims={'N': Dim(1, 4, 2)}, params={'w': ('N',)},\n"
        "              forward=lambda p, d: ((p.w * 0.0).sum(), None),\n"
        "              backward=lambda p, d, c, g: {'w': torch.full_like(p.w, 5.0)})\n")
    r = gcs("check", "flat", "--models-from", f, "--examples", "3", "--json", tmp_path / "r.json")
    assert r.returncode == 1
    assert report(tmp_path / "r.json")["models"][0]["worst_rel_err"] == {"autograd": 1.0, "finite_diff": 1.0}


# -- issue 8, item by item -----------------------------------------------------------

def test_1_a_closed_stdout_still_writes_the_json_and_exits_with_the_verdict(tmp_path):
    read, write = os.pipe()
    os.close(read)  # like `| true`: nobody reads
    try:
        r = gcs("check", "mlp_no_mask", "affine_scalar", "--models-from", WRONG, "--examples", "3",
                "--json", tmp_path / "r.json", stdout=write, stderr=subprocess.PIPE)
        listed = gcs("list", stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "Exception ignored" not in r.stderr
    doc = report(tmp_path / "r.json")
    assert doc["exit_code"] == 1 and names(doc) == ["mlp_no_mask", "affine_scalar"]
    assert listed.returncode == 0 and listed.stderr == ""


@pytest.mark.parametrize("where", ["missing folder", "a folder"])
def test_2_an_unwritable_json_path_is_refused_before_any_work(tmp_path, where):
    path = tmp_path / "no_such_dir" / "r.json" if where == "missing folder" else tmp_path
    r = gcs("check", "affine_scalar", "--examples", "2", "--json", path)
    assert r.returncode == 2 and r.stdout == ""
    assert one_line(r.stderr, f"--json {path}: ").startswith("gradcheck-suite: error: ")


@pytest.mark.parametrize("seed", ["9223372036854775807", str(2**70), "-1", "1.5"])
def test_3_seeds_out_of_range_are_usage_errors(tmp_path, seed):
    r = gcs("check", "affine_scalar", "--seed", seed, "--examples", "2", "--json", tmp_path / "r.json")
    assert r.returncode == 2
    one_line(r.stderr, f"--seed {seed}: must be a whole number from 0 to 4294967295")
    assert report(tmp_path / "r.json")["problems"] == [f"--seed {seed}: must be a whole number from 0 to 4294967295"]


def test_3_the_largest_seed_accepted_runs():
    r = gcs("check", "affine_scalar", "linear_layer", "--seed", "4294967295", "--examples", "2")
    assert r.returncode == 0, r.stdout + r.stderr


def test_4_every_usage_error_is_in_the_json_problems(tmp_path):
    import torch
    cuda = [] if torch.cuda.is_available() else ["--device", "cpu,cuda"]
    r = gcs("check", "mlp_rleu", "affine_scalar", "--dims", "Q=3", *cuda, "--examples", "2",
            "--json", tmp_path / "r.json")
    assert r.returncode == 2
    doc = report(tmp_path / "r.json")
    assert doc["exit_code"] == 2 and names(doc) == []          # a mistyped --dims name runs nothing
    expected = ["unknown model 'mlp_rleu'", "--dims Q: no selected model has such a dimension"]
    expected += ["--device cuda: CUDA is not available on this machine"] * bool(cuda)
    assert len(doc["problems"]) == len(expected)
    for text in expected:
        assert any(text in p for p in doc["problems"]), doc["problems"]
        one_line(r.stderr, text)


def test_5_a_model_file_with_a_syntax_error_is_a_model_error_naming_the_model(tmp_path):
    f = tmp_path / "broken.py"
    f.write_text(WRONG.read_text().replace("def backward(p, d, cache, g):", "def backward(p, d, cache, g)"))
    r = gcs("check", "mlp_no_mask", "affine_scalar", "--models-from", f, "--examples", "2",
            "--json", tmp_path / "r.json")
    assert r.returncode == 1
    line = one_line(r.stderr, "SyntaxError")
    assert line.startswith(f"gradcheck-suite: model error: {f}:") and line.endswith("not checked: mlp_no_mask")
    assert "unknown model" not in r.stderr and len(r.stderr.splitlines()) == 1
    assert "1 passed, 0 failed, 1 error" in r.stdout
    doc = report(tmp_path / "r.json")
    assert doc["exit_code"] == 1 and names(doc) == ["affine_scalar"] and doc["problems"] == [line.split(": ", 2)[2]]


def test_6_json_to_stdout_sends_the_human_output_to_stderr():
    r = gcs("check", "mlp_no_mask", "affine_scalar", "--models-from", WRONG, "--examples", "3", "--json", "-")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 1 and names(doc) == ["mlp_no_mask", "affine_scalar"]
    assert "mlp_no_mask: fail" in r.stderr and "1 passed, 1 failed" in r.stderr


def test_7_ctrl_c_keeps_what_finished_writes_the_json_and_exits_130(tmp_path, hangs):
    f, env, marks = hangs
    proc = subprocess.Popen([*COMMAND, "check", "affine_scalar", "hang_forward", "--models-from", str(f),
                             "--examples", "3", "--case-timeout", "0", "--json", str(tmp_path / "r.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(marks / "hang_forward", proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "gradcheck-suite: interrupted; the report covers what finished" in err.splitlines()
    assert re.search(r"^affine_scalar .* pass ", out, re.M)
    assert "1 passed, 0 failed, 1 not run (interrupted)" in out
    doc = report(tmp_path / "r.json")
    assert doc["interrupted"] is True and doc["exit_code"] == 130 and names(doc) == ["affine_scalar"]


def test_8_a_case_over_the_time_limit_is_an_error_naming_its_phase(tmp_path, hangs):
    f, env, _ = hangs
    r = gcs("check", "hang_forward", "hang_backward", "hang_autograd", "hang_fd", "affine_scalar",
            "--models-from", f, "--examples", "3", "--case-timeout", "2", "--json", tmp_path / "r.json", env=env)
    assert r.returncode == 1
    phases = {"hang_forward": "forward", "hang_backward": "backward", "hang_autograd": "autograd on the forward",
              "hang_fd": "finite differences"}
    for model, phase in phases.items():
        assert f"{model}: error — {phase} did not finish within 2 s (--case-timeout)" in flat(r.stdout)
    assert "1 passed, 0 failed, 4 errors" in r.stdout
    doc = report(tmp_path / "r.json")
    assert [m["verdict"] for m in doc["models"]] == ["error"] * 4 + ["pass"]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal (POSIX) to show the progress line")
def test_8_the_progress_line_ticks_with_the_model_and_the_phase_while_a_case_runs(tmp_path, hangs):
    f, env, _ = hangs
    master, slave = os.openpty()   # stderr is a terminal: the progress line is drawn
    try:
        r = gcs("check", "hang_backward", "--models-from", f, "--examples", "2", "--case-timeout", "2",
                env=env, stderr=slave, stdout=subprocess.PIPE)
        drawn = available(master)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 1
    frames = [s.strip() for s in drawn.split("\r\x1b[K") if s.strip()]
    ticks = [s for s in frames if s.startswith("[1/1] hang_backward float64 cpu: case 1/2, backward, ")]
    assert len({t.rsplit(" ", 1)[1] for t in ticks}) >= 2, frames   # the elapsed time moves
    assert all(len(s) < 80 for s in frames)


def test_9_a_case_too_large_for_memory_is_refused_up_front(tmp_path):
    huge = 10**12
    r = gcs("check", "mlp_relu", "affine_scalar", "--dims", f"H={huge}", "--examples", "2",
            "--json", tmp_path / "r.json")
    assert r.returncode == 2
    line = one_line(r.stderr, "mlp_relu: refused: a float64 case at")
    assert f"H={huge}" in line and re.search(r"needs about [\d.]+ [PET]B; [\d.]+ [KMGT]B is free on cpu", line)
    doc = report(tmp_path / "r.json")
    assert names(doc) == ["affine_scalar"] and doc["problems"] == [line.removeprefix("gradcheck-suite: error: ")]


def test_10_each_row_is_printed_as_its_model_finishes(tmp_path, hangs):
    f, env, marks = hangs
    proc = subprocess.Popen([*COMMAND, "check", "affine_scalar", "hang_forward", "--models-from", str(f),
                             "--examples", "3", "--case-timeout", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        wait_for(marks / "hang_forward", proc)   # the second model is running
        shown = available(proc.stdout.fileno())
    finally:
        proc.kill()
        proc.communicate()
    assert re.search(r"^model +dtype", shown, re.M) and re.search(r"^affine_scalar .* pass ", shown, re.M)


def test_11_the_table_and_the_failure_fit_80_columns(tmp_path):
    f = tmp_path / "long.py"
    f.write_text(WRONG.read_text().replace('"mlp_no_mask"', '"a_wrong_backward_with_a_rather_long_name"'))
    r = gcs("check", "mlp_no_mask", "a_wrong_backward_with_a_rather_long_name", "linear_regression",
            "--models-from", WRONG, "--models-from", f.name, "--examples", "5", "--dtype", "float64,float32",
            cwd=tmp_path)
    assert r.returncode == 1
    assert "a_wrong_backward_with_a_rather_long_name: fail" in r.stdout and "index" in r.stdout
    wide = [line for line in r.stdout.splitlines() if len(line) > 80]
    assert not wide, "\n".join(wide)


def test_12_a_threshold_that_is_not_a_number_is_refused_by_bench(tmp_path):
    run = {"machine_info": {"cpu": {"brand_raw": "x"}, "cpu_count": 2, "gpu": None, "torch_version": "2",
                            "torch_threads": 2, "python_version": "3"}, "datetime": "today", "benchmarks": []}
    (tmp_path / "run.json").write_text(json.dumps(run))
    for value, wanted in (("nan", "must be a finite percentage"), ("inf", "must be a finite percentage"),
                          ("-5", "must be at least 0")):
        r = gcs("bench", "--from-json", tmp_path / "run.json", "--baseline", tmp_path / "run.json",
                "--out", tmp_path / "out", "--no-plots", "--fail-on-regression", "--threshold", value)
        assert r.returncode == 2
        one_line(r.stderr, f"argument --threshold: '{value}' {wanted}")


def test_13_every_check_output_in_the_docs_is_what_the_command_prints():
    readme = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    blocks = re.findall(r"^```\n\$ (gradcheck-suite check .*?)\n(.*?)^```", readme, re.M | re.S)
    assert [shlex.split(c)[2] for c, _ in blocks] == ["mlp_no_mask", "p3_wrong_second"]

    def stable(text):  # numbers and times may move with the checker and the machine; the story may not
        return re.sub(r" +", " ", re.sub(r"\d+(\.\d+)?(e[+-]\d+)?", "#", text)).strip()

    for command, shown in blocks:
        r = gcs(*shlex.split(command)[1:], cwd=ROOT)
        assert r.returncode == 1
        assert stable(r.stdout) == stable(shown), command


@pytest.mark.parametrize("argv", [["list"], ["--help"], ["check", "--help"]])
def test_listing_and_help_do_not_load_torch(argv):
    code = ("import sys\nfrom gradcheck_suite.commands import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n" % argv)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
