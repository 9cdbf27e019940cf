"""The command line: exit codes, messages for a user's mistakes, JSON, reproduction."""
import json
import shlex

import pytest

from gradcheck_suite.cli import main

WRONG = """
from gradcheck_suite import Dim, Model

def forward(p, d):
    h = d.x @ p.w1
    y = h.clamp(min=0) @ p.w2
    return ((y - d.t) ** 2).sum(), (h, y)

def backward(p, d, cache, g):          # forgets the ReLU mask
    h, y = cache
    gy = 2 * g * (y - d.t)
    return {"w1": d.x.T @ (gy @ p.w2.T), "w2": h.clamp(min=0).T @ gy}

model = Model(name="mlp_no_mask", dims={"N": Dim(1, 8, 64), "D_in": Dim(1, 8, 1000), "H": Dim(1, 8, 100),
              "D_out": Dim(1, 4, 10)}, params={"w1": ("D_in", "H"), "w2": ("H", "D_out")},
              data={"x": ("N", "D_in"), "t": ("N", "D_out")}, forward=forward, backward=backward)
"""


@pytest.fixture
def wrong_file(tmp_path):
    f = tmp_path / "wrong.py"
    f.write_text(WRONG)
    return str(f)


def test_check_all_built_in_models_passes(capsys, tmp_path):
    out_json = tmp_path / "r.json"
    assert main(["check", "--examples", "3", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "9 passed, 0 failed" in out
    doc = json.loads(out_json.read_text())
    assert doc["exit_code"] == 0 and len(doc["models"]) == 9
    row = doc["models"][0]
    assert set(row) >= {"name", "verdict", "counts", "worst_rel_err", "reproduce", "failure", "seconds"}
    assert row["verdict"] == "pass" and row["counts"]["checked"] >= 1
    # three cases reach the first corners: the low ends at scale 1e-3, the high ends at 1e3
    assert row["coverage"]["scales"][0] == 1e-3 and row["coverage"]["scales"][-1] == 1e3
    mlp = next(r for r in doc["models"] if r["name"] == "mlp_relu")
    assert mlp["coverage"]["sizes"]["N"][0] == 1 and mlp["coverage"]["sizes"]["N"][-1] == 32


def test_a_wrong_backward_fails_with_the_element_and_a_command_that_reproduces_it(capsys, wrong_file, tmp_path):
    out_json = tmp_path / "r.json"
    assert main(["check", "mlp_no_mask", "--models-from", wrong_file, "--examples", "20", "--json", str(out_json)]) == 1
    out = capsys.readouterr().out
    assert "mlp_no_mask: fail — the manual gradient of w1 disagrees with autograd and finite differences" in out
    assert "index" in out and "finite diff" in out
    model = json.loads(out_json.read_text())["models"][0]
    assert model["verdict"] == "fail" and model["failure"]["failing"] == ["w1"]
    assert model["failure"]["parameters"]["w1"]["worst"][0]["finite_diff"] is not None
    command = model["reproduce"]
    assert f"--models-from {wrong_file}" in command and "--seed" in command and "--dims" in command
    # the command reproduces exactly that case
    argv = shlex.split(command)[1:] + ["--json", str(out_json)]
    assert main(argv) == 1
    again = json.loads(out_json.read_text())["models"][0]
    assert again["failure"]["case"] == model["failure"]["case"]
    assert again["counts"]["checked"] == 1


def test_dims_may_go_past_the_generated_range_to_the_seed_size(capsys, wrong_file):
    assert main(["check", "mlp_no_mask", "--models-from", wrong_file, "--dims", "N=64,D_in=1000,H=100,D_out=10",
                 "--seed", "0", "--scale", "1"]) == 1
    assert "dims N=64, D_in=1000, H=100, D_out=10" in capsys.readouterr().out


def test_an_unknown_model_is_a_usage_error_and_the_others_still_run(capsys):
    assert main(["check", "mlp_rleu", "affine_scalar", "--examples", "2"]) == 2
    captured = capsys.readouterr()
    assert "unknown model 'mlp_rleu'; did you mean mlp_relu" in captured.err
    assert "affine_scalar" in captured.out and "1 passed" in captured.out
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.parametrize("dims, message", [
    ("N", "'N' is not K=V"),
    ("N=x", "N='x' is not a whole number"),
    ("N=0", "N=0 must be at least 1"),
])
def test_bad_dims_are_usage_errors(capsys, dims, message):
    assert main(["check", "affine_scalar", "--dims", dims]) == 2
    assert message in capsys.readouterr().err


def test_dims_no_model_has_are_usage_errors(capsys):
    assert main(["check", "affine_scalar", "--dims", "Q=3", "--examples", "2"]) == 2
    assert "--dims Q: no selected model has such a dimension" in capsys.readouterr().err


def test_a_missing_models_file_is_a_usage_error(capsys, tmp_path):
    assert main(["check", "affine_scalar", "--models-from", str(tmp_path / "missing.py"), "--examples", "2"]) == 2
    captured = capsys.readouterr()
    assert f"{tmp_path / 'missing.py'}: no such file or module" in captured.err
    assert "1 passed" in captured.out


def test_a_model_file_that_raises_is_a_message_not_a_traceback(capsys, tmp_path):
    f = tmp_path / "boom.py"
    f.write_text("raise ValueError('bad config')\n")
    assert main(["check", "affine_scalar", "--models-from", str(f), "--examples", "2"]) == 1
    captured = capsys.readouterr()
    assert f"model error: {f}:1: the model file raised ValueError: bad config" in captured.err
    assert "Traceback" not in captured.err
    assert main(["check", "affine_scalar", "--models-from", str(f), "--examples", "2", "--verbose"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_cuda_asked_for_but_absent(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the absent-CUDA message cannot be shown")
    assert main(["check", "affine_scalar", "--device", "cpu,cuda", "--examples", "2"]) == 2
    captured = capsys.readouterr()
    assert "CUDA is not available on this machine" in captured.err
    assert "1 passed" in captured.out


def test_bad_options_are_usage_errors(capsys):
    assert main(["check", "--dtype", "float8"]) == 2
    assert main(["check", "--device", "tpu"]) == 2
    assert main(["check", "--examples", "0"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["check", "--profile", "forever"])
    assert info.value.code == 2


def test_list_shows_every_model_with_its_dims(capsys, tmp_path):
    out_json = tmp_path / "list.json"
    assert main(["list", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "mlp_relu" in out and "D_in∈[1,40] bench 1000" in out
    doc = json.loads(out_json.read_text())
    assert {m["name"] for m in doc["models"]} >= {"mlp_relu", "linear_layer"}


def test_an_error_verdict_exits_1_with_the_broken_contract(capsys, tmp_path):
    f = tmp_path / "contract.py"
    f.write_text(WRONG.replace('return {"w1"', 'return {"w0"').replace("mlp_no_mask", "bad_keys"))
    assert main(["check", "bad_keys", "--models-from", str(f), "--examples", "3"]) == 1
    out = capsys.readouterr().out
    assert "bad_keys: error — backward's gradients: missing w1; unexpected w0 (expected exactly w1, w2)" in out


def test_against_an_all_zero_gradient_errors_stay_finite_and_the_json_strict(capsys, tmp_path):
    f = tmp_path / "flat.py"
    f.write_text(
        "import torch\nfrom gradcheck_suite import Dim, Model\n"
        "model = Model(name='flat', dims={'N': Dim(1, 4, 2)}, params={'w': ('N',)},\n"
        "              forward=lambda p, d: ((p.w * 0.0).sum(), None),\n"
        "              backward=lambda p, d, c, g: {'w': torch.full_like(p.w, 5.0)})\n")
    out_json = tmp_path / "r.json"
    assert main(["check", "flat", "--models-from", str(f), "--examples", "3", "--json", str(out_json)]) == 1

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    doc = json.loads(out_json.read_text(), parse_constant=refuse)
    assert doc["models"][0]["worst_rel_err"] == {"autograd": 1.0, "finite_diff": 1.0}
