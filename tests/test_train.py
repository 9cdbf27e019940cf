"""gradcheck-suite train: the manual gradient against autograd over K optimiser steps.

The seed pages' own training loops come out ``same``; a wrong backward parts at a step;
a learning rate that diverges with any gradient is ``both diverge``, never the gradient's
fault; and the command reads like the others (one line and exit 2 for a bad option).
"""
import dataclasses
import json
import math
import os

import pytest
import torch

from gradcheck_suite import Dim, Model
from gradcheck_suite import load
from gradcheck_suite.train import BOTH, MANUAL, SAME, Options, train
from tests.test_cli import WRONG, gcs

SEED_DIMS = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}


def per_sample(xs, ys, w0, dtype="float64"):
    """y = w·x with one sample a step, cycling through the tutorial's data (seeds 000, 001)."""
    def data(step, dims, gen, dt):
        i = step % len(xs)
        return {"x": torch.tensor([xs[i]], dtype=dt), "y": torch.tensor([ys[i]], dtype=dt)}

    return Model(name="per_sample", dims={"N": Dim(1, 1, 1)}, params={"w": ()}, data={"x": ("N",), "y": ("N",)},
                 forward=lambda p, d: ((p.w * d.x - d.y) ** 2, d.x),
                 backward=lambda p, d, x, g: {"w": (g * 2 * x * (p.w * x - d.y)).sum()},
                 dtype=dtype, train=dict(lr=0.01, loss="sum", data=data,
                                         start=lambda dims, gen, dt: {"w": torch.tensor(w0, dtype=dt)}))


def test_seed_000_per_sample_loop_is_same_and_follows_the_golden_trace():
    model = per_sample([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0], 1.0)
    first = train(model, Options(steps=2))
    assert first.verdict == SAME, first.message
    assert first.losses["manual"] == pytest.approx([1.0, (1.02 * 2 - 4) ** 2])
    assert float(first.params["w"]) == pytest.approx(1.0984)          # the page's second row: w = 1.0984
    thirty = train(model, Options(steps=30 * 4))
    assert thirty.verdict == SAME, thirty.message
    assert float(thirty.params["w"]) == pytest.approx(2.0, abs=1e-6)


def test_seed_001_float32_loop_is_same_and_predicts_8_within_rounding():
    model = per_sample([1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 1.0, dtype="float32")
    r = train(model, Options(steps=100 * 3))
    assert r.verdict == SAME, r.message
    assert r.params["w"].dtype == torch.float32
    assert 4 * float(r.params["w"]) == pytest.approx(7.999998569488525, abs=4 * 4 * 2 ** -23)


def test_seed_002_linear_regression_same_at_1e_4_and_both_diverge_at_1e_3():
    model = load().get("linear_regression")
    fine = train(model, Options(lr=1e-4))
    assert (fine.verdict, fine.steps, fine.batch) == (SAME, 500, "fresh"), fine.message
    assert fine.losses["manual"][-1] < fine.losses["manual"][0] / 10
    wild = train(model, Options(lr=1e-3))
    assert wild.verdict == BOTH, wild.message
    assert f"autograd diverges too at step {wild.diverged_at}" in wild.message
    assert "not your gradient" in wild.message


def test_a_backward_without_the_relu_mask_parts_at_a_reported_step():
    r = train(load([str(WRONG)]).get("mlp_no_mask"), Options(lr=1e-6, dims=SEED_DIMS))
    assert r.verdict == MANUAL and r.parted_at is not None
    assert f"from step {r.parted_at}:" in r.message and "at step 100, loss" in r.message


def _mlp(name: str, w2_factor: float = 1.0, dtype: str = "float64") -> Model:
    """The built-in mlp_relu at its seed size, with w2's gradient scaled by ``w2_factor``."""
    import dataclasses

    from gradcheck_suite.models.mlp_relu import backward

    def scaled(p, d, cache, g):
        grads = backward(p, d, cache, g)
        return {**grads, "w2": w2_factor * grads["w2"]}

    return dataclasses.replace(load().get("mlp_relu"), name=name, backward=scaled, dtype=dtype)


def test_a_one_percent_scale_error_in_one_gradient_parts_within_200_steps():
    r = train(_mlp("w2_one_percent", 1.01), Options(steps=200))
    assert r.verdict == MANUAL and r.parted_at <= 200, r.message
    right = train(_mlp("mlp_right"), Options(steps=200))
    assert right.verdict == SAME, right.message


def _tanh_net(dtype: str) -> Model:
    """A float32 tanh layer on a scalar regression: any rounding grows at a large step."""
    def forward(p, d):
        h = torch.tanh(d.x @ p.w1)
        r = h @ p.w2 - d.t
        return 0.5 * (r ** 2).sum(), (h, r)

    def backward(p, d, cache, g):
        h, r = cache
        gr = g * r
        return {"w1": d.x.T @ ((gr @ p.w2.T) * (1 - h * h)), "w2": h.T @ gr}

    return Model(name="tanh_net", dims={"N": Dim(1, 32, 32), "I": Dim(1, 8, 8), "H": Dim(1, 16, 16),
                                        "O": Dim(1, 1, 1)},
                 params={"w1": ("I", "H"), "w2": ("H", "O")}, data={"x": ("N", "I"), "t": ("N", "O")},
                 forward=forward, backward=backward, dtype=dtype)


def _tanh_net_summed(order: str, dtype: str = "float32", w1_factor: float = 1.0) -> Model:
    """The tanh net with a backward that is right but rounds otherwise than autograd: it sums
    the batch's outer products in chunks of four, last chunk first (``"reversed"``), or
    accumulates in float64 and rounds once (``"float64"``); ``w1_factor`` makes it wrong."""
    base = _tanh_net(dtype)

    def batch_sum(a, b):        # a.T @ b, over the rows of a and b, in the chosen order
        if order == "float64":
            return (a.double().T @ b.double()).to(a.dtype)
        total = torch.zeros(a.shape[1], b.shape[1], dtype=a.dtype)
        for i in reversed(range(0, a.shape[0], 4)):
            total = total + a[i:i + 4].T @ b[i:i + 4]
        return total

    def backward(p, d, cache, g):
        h, r = cache
        gr = g * r
        gz = (gr @ p.w2.T) * (1 - h * h)
        return {"w1": w1_factor * batch_sum(d.x, gz), "w2": batch_sum(h, gr)}

    return dataclasses.replace(base, name=f"tanh_net_{order}", backward=backward)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_correct_float32_model_near_its_stability_limit_is_never_blamed(optimizer):
    """From a tenth of the stable step to several times it: same or both diverge, never the gradient."""
    seen = set()
    for model, lrs in ((load().get("linear_regression"), (1e-4, 3e-4, 4.4e-4, 4.7e-4, 5e-4, 8e-4)),
                       (_tanh_net("float32"), (0.003, 0.01, 0.03, 0.06, 0.1, 0.2))):
        for lr in lrs:
            # momentum 0.9 is stable up to about twice the plain step; Adam's steps are bounded
            # by its rate, which is chaotic long before it blows up
            factor = {"sgd": 1, "momentum": 2, "adam": 30}[optimizer]
            r = train(model, Options(lr=lr * factor, dtype="float32",
                                     optimizer=optimizer, steps=200))
            assert r.verdict in (SAME, BOTH), (model.name, lr, r.message)
            seen.add(r.verdict)
    if optimizer != "adam":
        assert seen == {SAME, BOTH}    # the sweep reached both sides of the limit


@pytest.mark.parametrize("order", ["reversed", "float64"])
def test_a_correct_backward_that_sums_in_another_order_trains_the_same_under_adam_at_a_high_rate(order):
    """Adam at these rates is chaotic: two correct gradients that round differently part by far
    more than autograd's own float32-against-float64 drift (1.8 is where one pair alone was
    40 times short of the manual run's distance).  The rounding twins' spread covers them."""
    model = _tanh_net_summed(order)
    apart = 0.0
    for lr in (0.3, 0.9, 1.8, 3.0, 6.0):
        r = train(model, Options(lr=lr, dtype="float32", optimizer="adam", steps=200))
        assert r.verdict == SAME, (lr, r.message)
        apart = max(apart, *(d for d in r.distance if d is not None))
    assert apart > 0        # the manual run does round otherwise than autograd's


def test_the_rounding_twins_start_only_when_the_manual_run_leaves_the_float64_line():
    calm = train(_tanh_net_summed("reversed"), Options(lr=0.003, dtype="float32", steps=50))
    assert calm.verdict == SAME and "rounding twins were not needed" in calm.envelope_from
    wrong = train(_tanh_net_summed("reversed", w1_factor=1.01), Options(lr=0.003, dtype="float32", steps=50))
    assert wrong.verdict == MANUAL and "or against 2 rounding twins" in wrong.envelope_from, wrong.message


@pytest.mark.parametrize("optimizer, lr", [("sgd", 0.01), ("momentum", 0.02)])
def test_a_float32_gradient_wrong_by_one_percent_still_parts_near_the_stability_limit(optimizer, lr):
    r = train(_tanh_net_summed("reversed", w1_factor=1.01), Options(lr=lr, dtype="float32", optimizer=optimizer,
                                                                    steps=200))
    assert r.verdict == MANUAL, r.message


def test_under_adam_at_a_high_rate_a_wrong_direction_still_parts():
    """Adam divides each element by its own running size, so a gradient off by a constant
    factor trains the same there; a wrong direction does not."""
    base = _tanh_net("float32")

    def no_tanh_derivative(p, d, cache, g):
        h, r = cache
        gr = g * r
        return {"w1": d.x.T @ (gr @ p.w2.T), "w2": h.T @ gr}

    wrong = dataclasses.replace(base, name="tanh_no_derivative", backward=no_tanh_derivative)
    for lr in (0.09, 1.8):
        r = train(wrong, Options(lr=lr, dtype="float32", optimizer="adam", steps=200))
        assert r.verdict == MANUAL, (lr, r.message)


def test_float16_and_a_small_scale_train_the_same():
    r = train(load().get("scalar_linear"), Options(dtype="float32", steps=50))
    assert r.verdict == SAME, r.message
    r = train(_tanh_net("float16"), Options(steps=50))
    assert r.verdict in (SAME, BOTH), r.message


def test_a_broken_backward_is_an_error_line_not_a_traceback():
    bad = Model(name="bad_shape", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)},
                forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: {"w": g})
    r = train(bad, Options(steps=3))
    assert r.verdict == "error" and "w: gradient shape (), expected (4,)" in r.message
    raises = Model(name="raises", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)},
                   forward=lambda p, d: ((p.w ** 2).sum(), None), backward=lambda p, d, c, g: 1 / 0)
    r = train(raises, Options(steps=3))
    assert r.verdict == "error" and "backward raised ZeroDivisionError" in r.message


def test_a_misspelled_train_key_names_the_nearest():
    from gradcheck_suite import SpecError
    with pytest.raises(SpecError, match="unknown key 'step'; did you mean 'steps'"):
        Model(name="m", dims={"N": Dim(1, 2, 2)}, params={"w": ("N",)}, forward=lambda p, d: (p.w, None),
              backward=lambda p, d, c, g: {"w": g}, train=dict(step=3))


# -- the command --------------------------------------------------------------------------

def test_the_command_reports_json_with_nulls_for_what_did_not_happen(tmp_path):
    r = gcs("train", "linear_regression", "--lr", "1e-3", "--steps", "400", "--json", "t.json", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    text = " ".join(r.stdout.split())
    assert "both diverge" in text and "autograd diverges too at step" in text
    doc = json.loads((tmp_path / "t.json").read_text())       # valid JSON: no NaN, no Infinity
    (m,) = doc["models"]
    assert m["verdict"] == "both diverge" and m["steps"] == 400 and m["lr"] == 1e-3 and m["optimizer"] == "sgd"
    assert set(m["losses"]) == {"manual", "autograd", "float64"} and len(m["envelope"]) == 400
    assert m["nonfinite_at"]["autograd"] is not None and m["losses"]["autograd"][-1] is None
    assert m["parted_at"] is None and m["message"]


def test_the_command_says_same_and_exits_0(tmp_path):
    r = gcs("train", "scalar_linear", "affine_scalar", "--steps", "20", "--json", "t.json", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 same, 0 manual diverges, 0 both diverge, 0 error" in r.stdout
    assert [m["verdict"] for m in json.loads((tmp_path / "t.json").read_text())["models"]] == ["same", "same"]


def test_a_wrong_backward_exits_1_with_the_step(tmp_path):
    r = gcs("train", "mlp_no_mask", "--models-from", str(WRONG), "--steps", "20", cwd=tmp_path)
    assert r.returncode == 1
    text = " ".join(r.stdout.split())
    assert "manual diverges" in text and "trains differently from autograd from step" in text


@pytest.mark.parametrize("args, wanted", [
    (["--steps", "0"], "--steps"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["--batch", "random"], "invalid choice: 'random'"),
    (["--dims", "Q=3"], "--dims Q: no selected model has such a dimension"),
    (["--dtype", "float8"], "--dtype 'float8' is not one of"),
    (["--seed", "-4"], "--seed"),
])
def test_a_bad_option_is_one_line_and_exit_2(tmp_path, args, wanted):
    r = gcs("train", "scalar_linear", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and wanted in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_the_plot_is_written_with_the_plot_extra(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot needs the plot extra (matplotlib)")
    r = gcs("train", "mlp_no_mask", "--models-from", str(WRONG), "--steps", "10", "--out", "report",
            "--json", "t.json", cwd=tmp_path)
    png = tmp_path / "report" / "train.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot: {os.path.join('report', 'train.png')}" in r.stdout
    assert json.loads((tmp_path / "t.json").read_text())["models"][0]["plot"].endswith("train.png")


def test_without_matplotlib_the_table_and_json_still_come_out(tmp_path):
    blocker = tmp_path / "blocker" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is blocked for this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = gcs("train", "scalar_linear", "--steps", "5", "--out", "report", "--json", "t.json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "plot skipped: matplotlib is not installed" in r.stderr
    assert "step" in r.stdout and "manual" in r.stdout and not (tmp_path / "report" / "train.png").exists()
    assert json.loads((tmp_path / "t.json").read_text())["models"][0]["verdict"] == "same"


PLUGIN_TEST = """
def test_trains(gradcheck_target):
    result = gradcheck_target.train(steps=20)
    assert result.verdict == "same"
"""


def test_the_plugin_trains_and_fails_with_the_message(pytester):
    pytester.makepyfile(test_train=PLUGIN_TEST)
    pytester.makepyfile(wrong_models=WRONG.read_text())
    r = pytester.runpytest("--gradcheck-models-from", "wrong_models.py", "--gradcheck-models",
                           "mlp_no_mask,linear_regression", "--gradcheck-device", "cpu", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*mlp_no_mask: the manual gradient trains differently from autograd from step*"])


def test_losses_are_finite_numbers_or_none():
    r = train(load().get("linear_regression"), Options(lr=1e-3, steps=80))
    doc = r.to_json()
    json.dumps(doc, allow_nan=False)
    assert all(v is None or math.isfinite(v) for vs in doc["losses"].values() for v in vs)


def test_every_train_output_in_the_docs_is_what_the_command_prints():
    import re
    import shlex

    from tests.test_cli import ROOT
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    blocks = re.findall(r"^```\n\$ (gradcheck-suite train .*?)\n(.*?)^```", docs, re.M | re.S)
    assert [shlex.split(c)[2] for c, _ in blocks] == ["mlp_no_mask"]

    def stable(text):  # numbers may move with the machine's rounding; the story may not
        return re.sub(r" +", " ", re.sub(r"\d+(\.\d+)?(e[+-]\d+)?", "#", text)).strip()

    for command, shown in blocks:
        r = gcs(*shlex.split(command)[1:], cwd=ROOT)
        assert r.returncode == 1
        assert stable(r.stdout) == stable(shown), command


def test_a_users_repository_trains_its_configured_models(tmp_path):
    """The project's [tool.gradcheck-suite] settings choose the models, from any folder."""
    (tmp_path / "pyproject.toml").write_text('[tool.gradcheck-suite]\nmodels-from = ["models/"]\n'
                                             'dtypes = ["float64", "float32"]\n')
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "wrong.py").write_text(WRONG.read_text())
    (tmp_path / "deep" / "er").mkdir(parents=True)
    r = gcs("train", "--steps", "5", "--json", "t.json", cwd=tmp_path / "deep" / "er")
    assert r.returncode == 1, r.stderr
    names = [m["name"] for m in json.loads((tmp_path / "deep" / "er" / "t.json").read_text())["models"]]
    assert "mlp_no_mask" in names and "linear_regression" not in names     # the built-ins are not the user's


def test_a_loss_that_does_not_fit_the_dtype_is_said_so_not_blamed_on_the_learning_rate():
    big = Model(name="big_sum", dims={"N": Dim(1, 4096, 4096)}, params={"w": ("N",)},
                forward=lambda p, d: (((100 * p.w) ** 2).sum(), None),
                backward=lambda p, d, c, g: {"w": 2e4 * g * p.w})
    r = train(big, Options(steps=5, dtype="float16"))
    assert r.verdict == "error" and "does not fit float16" in r.message, r.message
    assert train(big, Options(steps=5, dtype="float32")).verdict == SAME


def test_the_float32_envelope_run_starts_only_when_the_manual_run_leaves_the_floor():
    floor = 10 * torch.finfo(torch.float32).eps
    right = train(_mlp("mlp_right"), Options(steps=30))
    assert right.verdict == SAME and all(e == pytest.approx(floor) for e in right.envelope)
    assert "run was not needed" in right.envelope_from
    wrong = train(load([str(WRONG)]).get("mlp_no_mask"), Options(lr=1e-6, dims=SEED_DIMS, steps=30))
    assert wrong.verdict == MANUAL and max(wrong.envelope) > 10 * floor    # measured, from step 1 on
    assert "run was not needed" not in wrong.envelope_from


def test_off_a_terminal_a_long_training_says_it_is_still_running(tmp_path):
    env = {**os.environ, "GRADCHECK_SUITE_HEARTBEAT": "0"}
    r = gcs("train", "scalar_linear", "--steps", "5", cwd=tmp_path, env=env)
    assert r.returncode == 0
    assert "gradcheck-suite: still training scalar_linear: step 1/5" in r.stderr and "\x1b" not in r.stderr
    quiet = gcs("train", "scalar_linear", "--steps", "5", cwd=tmp_path)      # the default: every 30 s
    assert "still training" not in quiet.stderr


def test_scale_moves_the_start_and_a_loss_too_large_for_the_dtype_says_what_to_lower(tmp_path):
    small = train(load().get("two_layer_scalar"), Options(steps=20, scale=1e-3))
    assert small.verdict == SAME, small.message
    r = gcs("train", "affine_scalar", "--scale", "1e3", "--dtype", "float16", "--steps", "5", cwd=tmp_path)
    assert r.returncode == 1 and "smaller --scale" in " ".join(r.stdout.split())
    bad = gcs("train", "affine_scalar", "--scale", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--scale" in bad.stderr
