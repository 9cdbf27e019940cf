"""A run split across machines: ``check --shard K/N`` through the real command, the parts
joined again by ``gradcheck-suite merge``, and pytest's ``--gradcheck-shard`` splitting alike."""
import json
import os
import random
import re

import pytest

# pytester runs pytest inside this process and then drops the modules that run imported;
# importing the checker here first keeps one torch and one hypothesis for every run
import gradcheck_suite.run.report  # noqa: F401
from gradcheck_suite import Dim, Model
from gradcheck_suite.run import shard
from gradcheck_suite.verdict import rules
from tests.test_cli import gcs

# two files of models of several sizes; one backward doubles its gradient
MODELS_A = """
from gradcheck_suite import Dim, Model

def _forward(p, d):
    return (p.w * d.x).sum(), None

def _backward(p, d, cache, g):
    return {"w": g * d.x}

def _doubled(p, d, cache, g):
    return {"w": 2 * g * d.x}

def _model(name, high, backward=_backward):
    return Model(name=name, dims={"N": Dim(1, high, high)}, params={"w": ("N",)}, data={"x": ("N",)},
                 forward=_forward, backward=backward)

tiny = _model("tiny", 2)
small = _model("small", 8)
doubled = _model("doubled", 6, _doubled)
wide = _model("wide", 2000)
"""
MODELS_B = MODELS_A.split("tiny =")[0] + """
medium = _model("medium", 64)
large = _model("large", 600)
little = _model("little", 3)
"""
NAMES = {"tiny", "small", "doubled", "wide", "medium", "large", "little"}
TEST_FILE = """
def test_backward(gradcheck_target):
    gradcheck_target.check()
"""


def _rows(stdout: str) -> list[str]:
    """The table's rows and what follows them, numbers and times masked: they may move with
    the machine's speed (the shrinking of a failure has a time budget); the story may not."""
    body = stdout.split("-------\n", 1)[1]
    return [re.sub(r" +", " ", re.sub(r"\d+(\.\d+)?(e[+-]\d+)?s?", "#", line)).strip()
            for line in body.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The whole run, its three parts and their merge, once for the module."""
    d = tmp_path_factory.mktemp("shard")
    (d / "a.py").write_text(MODELS_A)
    (d / "b.py").write_text(MODELS_B)
    (d / "broken.py").write_text("raise ImportError('needs a package that is not here')\n")
    common = ["--models-from", d / "a.py", "--models-from", d / "b.py", "--models-from", d / "broken.py",
              "--examples", "3", "--no-progress"]
    out = {"dir": d, "common": common}
    out["whole"] = gcs("check", *common, "--json", d / "whole.json", cwd=d)
    for k in (1, 2, 3):
        out[k] = gcs("check", *common, "--shard", f"{k}/3", "--json", d / f"p{k}.json", cwd=d)
    out["merge"] = gcs("merge", d / "p3.json", d / "p1.json", d / "p2.json", "--json", d / "merged.json",
                       "--markdown", d / "merged.md", cwd=d)
    for key in ("whole.json", "p1.json", "p2.json", "p3.json", "merged.json"):
        out[key] = json.loads((d / key).read_text())
    return out


def test_the_parts_hold_the_whole_runs_models_each_once(run):
    assert run["whole"].returncode == 1, run["whole"].stderr
    whole = [m["name"] for m in run["whole.json"]["models"]]
    assert set(whole) == NAMES
    parts = [run[f"p{k}.json"] for k in (1, 2, 3)]
    ran = [m["name"] for p in parts for m in p["models"]]
    assert sorted(ran) == sorted(whole)                  # every model in exactly one part
    for k, p in enumerate(parts, 1):
        assert p["shard"]["part"] == k and p["shard"]["of"] == 3
        assert sorted(p["shard"]["selection"]) == sorted(whole)
        assert [m["name"] for m in p["models"]] == p["shard"]["models"] != []
        assert run[k].stdout.startswith(f"shard {k}/3: {len(p['models'])} of the 7 selected models")
        # a part's exit code is check's over its models and the problems every part shares
        assert run[k].returncode == 1, run[k].stderr
        assert p["problems"] == run["whole.json"]["problems"]
        assert ("doubled" in p["shard"]["models"]) == any(m["verdict"] == "fail" for m in p["models"])


def test_the_merge_of_the_parts_is_the_whole_run(run):
    merged, whole = run["merged.json"], run["whole.json"]
    assert run["merge"].returncode == merged["exit_code"] == whole["exit_code"] == 1, run["merge"].stderr
    key = [(m["name"], m["dtype"], m["device"], m["verdict"]) for m in whole["models"]]
    assert [(m["name"], m["dtype"], m["device"], m["verdict"]) for m in merged["models"]] == key
    assert ("doubled", "float64", "cpu", "fail") in key
    assert merged["merged"]["complete"] is True and merged["merged"]["parts"] == [1, 2, 3]
    assert merged["torch"] == whole["torch"]
    # a model file that did not load is every part's problem, and the whole run's once
    assert merged["problems"] == whole["problems"] != [] and "broken.py" in whole["problems"][0]
    # the table and the failure's message print as check prints them
    assert _rows(run["merge"].stdout) == _rows(run["whole"].stdout)
    assert "doubled: fail" in run["merge"].stdout and "reproduce: gradcheck-suite check doubled" in run["merge"].stdout
    md = (run["dir"] / "merged.md").read_text()
    assert "**6 passed, 1 failed, 1 error** (exit code 1)" in md and "| doubled | float64 | cpu |" in md
    said = [line for line in run["whole"].stderr.splitlines() if line.startswith("gradcheck-suite: model error")]
    assert said and [line for line in run["merge"].stderr.splitlines() if line.startswith("gradcheck-suite:")] == said


def test_the_parts_of_passing_models_merge_to_exit_0(run):
    d = run["dir"]
    passing = [k for k in (1, 2, 3) if "doubled" not in run[f"p{k}.json"]["shard"]["models"]]
    docs = []
    for k in (1, 2, 3):         # the parts as they would have been with the model and the file fixed
        doc = json.loads((d / f"p{k}.json").read_text())
        if k not in passing:
            for m in doc["models"]:
                m.update(verdict="pass", failure=None, reproduce=None)
        doc.update(exit_code=0, problems=[])
        (d / f"fixed{k}.json").write_text(json.dumps(doc))
        docs.append(d / f"fixed{k}.json")
    r = gcs("merge", *docs)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("7 passed, 0 failed")


def test_a_missing_or_repeated_part_is_named_in_one_line_and_exits_3(run):
    d = run["dir"]
    r = gcs("merge", d / "p1.json", d / "p3.json", "--json", d / "incomplete.json")
    assert r.returncode == 3
    lines = [line for line in r.stderr.splitlines() if line.startswith("gradcheck-suite: error:")]
    assert lines == ["gradcheck-suite: error: incomplete merge: 2 of 3 parts; missing: part 2/3"]
    doc = json.loads((d / "incomplete.json").read_text())
    assert doc["exit_code"] == 3 and doc["merged"]["missing"] == [2] and doc["merged"]["complete"] is False
    assert doc["problems"][0] == lines[0].split("error: ", 1)[1]      # then the parts' own

    r = gcs("merge", d / "p1.json", d / "p2.json", d / "p3.json", d / "p2.json")
    assert r.returncode == 3
    assert (f"gradcheck-suite: error: incomplete merge: 3 of 3 parts; given more than once: part 2/3 "
            f"({d / 'p2.json'}, {d / 'p2.json'})") in r.stderr.splitlines()


def test_parts_of_different_runs_are_refused(run, tmp_path):
    other = json.loads((run["dir"] / "p2.json").read_text())
    other["shard"]["selection"].append("another")
    (tmp_path / "other.json").write_text(json.dumps(other))
    r = gcs("merge", run["dir"] / "p1.json", tmp_path / "other.json", run["dir"] / "p3.json")
    assert r.returncode == 3
    assert "gradcheck-suite: error: parts of different runs: the selection differs" in r.stderr
    other = json.loads((run["dir"] / "p2.json").read_text())
    other["shard"]["of"] = 4
    (tmp_path / "four.json").write_text(json.dumps(other))
    r = gcs("merge", run["dir"] / "p1.json", tmp_path / "four.json", run["dir"] / "p3.json")
    assert r.returncode == 3 and "parts of different runs: split into 3 parts" in r.stderr


def test_a_report_that_is_not_a_part_is_a_usage_error(run, tmp_path):
    r = gcs("merge", run["dir"] / "whole.json", tmp_path / "absent.json")
    assert r.returncode == 2
    assert f"{run['dir'] / 'whole.json'}: not the report of a part: it has no \"shard\"" in r.stderr
    assert f"{tmp_path / 'absent.json'}: no such file" in r.stderr


def test_the_split_does_not_read_the_order_of_files_or_the_hash_seed(run):
    d = run["dir"]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    r = gcs("check", "--models-from", d / "b.py", "--models-from", d / "broken.py", "--models-from", d / "a.py",
            "--examples", "1",
            "--no-progress", "--shard", "2/3", "--json", "-", env=env, cwd=d)
    assert sorted(json.loads(r.stdout)["shard"]["models"]) == sorted(run["p2.json"]["shard"]["models"])


def test_a_part_with_nothing_in_it_passes_and_says_so(run, tmp_path):
    r = gcs("check", "--models-from", run["dir"] / "a.py", "--examples", "1", "--no-progress",
            "--shard", "5/5", "--json", tmp_path / "p5.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("shard 5/5: 0 of the 4 selected models; nothing to check in this part")
    doc = json.loads((tmp_path / "p5.json").read_text())
    assert doc["shard"]["models"] == [] and doc["models"] == []


@pytest.mark.parametrize("value, message", [
    ("0/3", "--shard 0/3: K must be from 1 to N (3)"),
    ("3/2", "--shard 3/2: K must be from 1 to N (2)"),
    ("x", "--shard x: must be K/N, the K-th of N parts, e.g. 1/3"),
    ("1/0", "--shard 1/0: N must be at least 1"),
])
def test_bad_shard_values_are_one_line_and_exit_2(tmp_path, value, message):
    r = gcs("check", "--builtin", "--shard", value, "--json", tmp_path / "r.json", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"gradcheck-suite: error: {message}"]
    assert json.loads((tmp_path / "r.json").read_text())["problems"] == [message]


# -- the split itself ------------------------------------------------------------------

def _model(name: str, high: int) -> Model:
    return Model(name=name, dims={"N": Dim(1, high, high)}, params={"w": ("N",)}, data={"x": ("N",)},
                 forward=lambda p, d: ((p.w * d.x).sum(), None), backward=lambda p, d, c, g: {"w": g * d.x})


def _names(parts) -> list[list[str]]:
    return [sorted(m.name for m in p) for p in parts]


def test_every_model_lands_in_one_part_whatever_the_order_given():
    models = [_model(f"m{i}", 1 + (i * 37) % 500) for i in range(23)]
    first = _names(shard.split(models, 4))
    assert sorted(n for p in first for n in p) == sorted(m.name for m in models)
    for seed in range(5):
        shuffled = list(models)
        random.Random(seed).shuffle(shuffled)
        assert _names(shard.split(shuffled, 4)) == first
        assert [m.name for m in shard.part(shuffled, 2, 4)] == [m.name for m in shuffled if m.name in first[1]]


def test_parts_are_balanced_by_the_estimated_cost():
    big = _model("big", 10 * rules.SHARD_CASE_ELEMENTS)
    models = [big] + [_model(f"s{i}", 1) for i in range(10)]
    parts = _names(shard.split(models, 3))
    assert parts[0] == ["big"]                       # the costly model has a part of its own
    assert sorted(map(len, parts[1:])) == [5, 5]
    costs = [sum(shard.cost(m) for m in p) for p in shard.split(models, 3)]
    assert max(costs[1:]) - min(costs[1:]) <= shard.cost(models[1])


def test_models_of_one_cost_or_of_unknown_cost_are_split_by_count(monkeypatch):
    same = [_model(f"m{i}", 4) for i in range(10)]
    assert sorted(map(len, shard.split(same, 3))) == [3, 3, 4]
    largest = shard.largest

    def untold(model, dims, hyper):          # a record whose shapes cannot be told from it alone
        if model.name == "odd":
            raise ValueError("no size without running it")
        return largest(model, dims, hyper)
    monkeypatch.setattr(shard, "largest", untold)
    odd = _model("odd", 4)
    assert shard.cost(odd) is None
    mixed = [odd, _model("huge", 100_000)] + [_model(f"m{i}", 1) for i in range(5)]
    assert sorted(map(len, shard.split(mixed, 2))) == [3, 4]
    assert shard.cost(mixed[1]) > 100_000            # known alone, yet the parts are by count


# -- the pytest plugin -----------------------------------------------------------------

def _collected(result) -> list[str]:
    return re.findall(r"test_backward\[(\w+)-cpu-float64\]", result.stdout.str())


def test_the_plugin_splits_as_the_command_line_does(pytester, run):
    d = run["dir"]
    pytester.makepyfile(test_user_models=TEST_FILE)
    every = []
    for k in (1, 2, 3):
        result = pytester.runpytest("--collect-only", "-q", "--gradcheck-models-from", str(d / "a.py"),
                                    "--gradcheck-models-from", str(d / "b.py"), "--gradcheck-device", "cpu",
                                    "--gradcheck-shard", f"{k}/3")
        names = _collected(result)
        assert sorted(names) == sorted(run[f"p{k}.json"]["shard"]["models"])
        every += names
    assert sorted(every) == sorted(NAMES)


def test_the_plugin_runs_its_part(pytester, run):
    d = run["dir"]
    k = next(k for k in (1, 2, 3) if "doubled" in run[f"p{k}.json"]["shard"]["models"])
    pytester.makepyfile(test_user_models=TEST_FILE)
    result = pytester.runpytest("--gradcheck-models-from", str(d / "a.py"), "--gradcheck-models-from", str(d / "b.py"),
                                "--gradcheck-device", "cpu", "--gradcheck-examples", "3", "--gradcheck-shard", f"{k}/3")
    result.assert_outcomes(passed=len(run[f"p{k}.json"]["shard"]["models"]) - 1, failed=1)
    result.stdout.fnmatch_lines(["*doubled: fail*"])


@pytest.mark.parametrize("value, message", [("0/3", "0/3: K must be from 1 to N (3)"),
                                            ("x", "x: must be K/N, the K-th of N parts, e.g. 1/3")])
def test_a_bad_plugin_shard_is_a_usage_error_in_one_line(pytester, value, message):
    pytester.makepyfile(test_user_models=TEST_FILE)
    result = pytester.runpytest("--gradcheck-shard", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*error: argument --gradcheck-shard: {message}"])


@pytest.mark.parametrize("argv", [["merge", "--help"], ["check", "--help"]])
def test_the_help_names_the_options_without_loading_torch(argv):
    import subprocess
    import sys
    code = ("import sys\nfrom gradcheck_suite.commands import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n" % argv)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    wanted = "--markdown FILE" if argv[0] == "merge" else "--shard K/N"
    assert wanted in re.sub(r"\s+", " ", r.stdout)
