"""The pytest plugin, driven through pytester."""
import subprocess
import sys

import pytest

# pytester runs pytest inside this process and then drops the modules that run imported;
# importing the checker here first keeps one torch and one hypothesis for every run
import gradcheck_suite.run.report  # noqa: F401
import gradcheck_suite.run.strategies  # noqa: F401
from tests.test_cli import HANGS, WRONG

TEST_FILE = """
def test_backward(gradcheck_target):
    gradcheck_target.check()
"""


def test_parametrizes_over_the_registry_with_readable_ids(pytester):
    pytester.makepyfile(test_user_models=TEST_FILE)
    result = pytester.runpytest("--collect-only", "-q", "--gradcheck-builtin", "--gradcheck-dtype", "float64,float32")
    out = result.stdout.str()
    for name in ("mlp_relu-cpu-float64", "mlp_relu-cpu-float32", "linear_layer-cuda-float64", "two_layer_net-cpu-float32"):
        assert f"test_user_models.py::test_backward[{name}]" in out
    assert "36 tests collected" in out


def test_with_nothing_configured_it_says_so_in_one_line(pytester):
    pytester.makepyfile(test_user_models=TEST_FILE)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no models configured: add [[]tool.gradcheck-suite[]] models-from = *"])
    assert "Traceback" not in result.stdout.str()


def test_selects_models_and_skips_cuda_with_the_reason(pytester):
    import torch
    pytester.makepyfile(test_user_models=TEST_FILE)
    result = pytester.runpytest("-rs", "--gradcheck-models", "affine_scalar,mlp_relu", "--gradcheck-examples", "3")
    if torch.cuda.is_available():
        result.assert_outcomes(passed=4)
    else:
        result.assert_outcomes(passed=2, skipped=2)
        result.stdout.fnmatch_lines(["*SKIPPED*CUDA not available*"])


def test_a_wrong_backward_fails_with_the_report(pytester):
    pytester.makepyfile(test_user_models=TEST_FILE)
    models = pytester.makepyfile(wrong_models=WRONG.read_text())
    result = pytester.runpytest("--gradcheck-models-from", str(models), "--gradcheck-models", "mlp_no_mask",
                                "--gradcheck-device", "cpu", "--gradcheck-examples", "10")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*mlp_no_mask: fail — the manual gradient of w1 disagrees with autograd and*",
        "*w1 * outside tolerance: no simple relation to autograd's",
        "*gradient (other)*",
        "*look at: *wrong_models.py:19   gh = gy @ p.w2.T*",
        "*gh is not the gradient of h, defined at *wrong_models.py:11; gy*",
        "*wrong_models.py:18) is right*",
        "*reproduce: gradcheck-suite check mlp_no_mask*",
        "*--models-from*wrong_models.py*",
        "*--seed*",
    ])
    assert "Traceback" not in result.stdout.str()


def test_load_problems_and_unknown_names_become_failing_tests(pytester):
    pytester.makepyfile(test_user_models=TEST_FILE)
    boom = pytester.makepyfile(boom="raise ImportError('needs a package that is not here')\n")
    result = pytester.runpytest("--gradcheck-models-from", str(boom), "--gradcheck-models", "affine_scalar,nope",
                                "--gradcheck-device", "cpu", "--gradcheck-examples", "2")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*the model file raised ImportError: needs a package that is not here*",
                                 "*unknown model 'nope'*"])


def test_options_are_listed_with_their_defaults(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*gradcheck-suite: hand-written backward checks*", "*--gradcheck-device=DEVICES*",
                                 "*(default: cpu,cuda)*"])


def test_importing_the_plugin_does_not_import_torch():
    code = "import sys, gradcheck_suite.plugin; print('torch' in sys.modules, 'hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_tests_without_the_fixture_are_left_alone(pytester):
    pytester.makepyfile(test_plain="def test_one():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest("-q")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("option, value, message", [
    ("--gradcheck-examples", "0", "argument --gradcheck-examples: 0: must be a whole number of at least 1"),
    ("--gradcheck-examples", "few", "argument --gradcheck-examples: few: must be a whole number of at least 1"),
    ("--gradcheck-case-timeout", "nan", "argument --gradcheck-case-timeout: nan: must be seconds, 0 for no limit"),
    ("--gradcheck-threads", "0", "argument --gradcheck-threads: 0: must be a whole number of at least 1"),
])
def test_bad_option_values_are_usage_errors_in_one_line(pytester, option, value, message):
    pytester.makepyfile(test_user_models=TEST_FILE)
    result = pytester.runpytest(option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*error: {message}"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_case_over_the_time_limit_fails_its_test_naming_the_phase(pytester, monkeypatch):
    monkeypatch.setenv("HANG_MARKS", str(pytester.path))
    pytester.makepyfile(test_user_models=TEST_FILE)
    models = pytester.makepyfile(hang_models=HANGS)
    result = pytester.runpytest("--gradcheck-models-from", str(models), "--gradcheck-device", "cpu",
                                "--gradcheck-models", "hang_backward,affine_scalar", "--gradcheck-examples", "2",
                                "--gradcheck-case-timeout", "2")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*hang_backward: error — backward did not finish within 2 s (--case-timeout)*"])


def test_a_check_runs_on_the_threads_asked_for_and_gives_the_count_back(pytester):
    pytester.makepyfile(test_threads="""
        import torch

        from gradcheck_suite.run import runner

        seen = []
        real = runner.run_model

        def spy(*args, **kwargs):
            seen.append(torch.get_num_threads())
            return real(*args, **kwargs)

        runner.run_model = spy

        def test_backward(gradcheck_target):
            torch.set_num_threads(2)
            gradcheck_target.check()
            assert seen == [3] and torch.get_num_threads() == 2
    """)
    result = pytester.runpytest_subprocess("--gradcheck-models", "affine_scalar", "--gradcheck-device", "cpu",
                                           "--gradcheck-examples", "2", "--gradcheck-threads", "3")
    result.assert_outcomes(passed=1)
