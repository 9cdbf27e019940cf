"""fullgraph (check/stages/compiled.py): with ``--compile-fullgraph`` a graph break under
torch.compile is an error naming dynamo's reason, as ``torch.compile(fullgraph=True)``
refuses it; without it, a note."""
import torch

from gradcheck_suite import Dim, Model, run_model
from gradcheck_suite.check.case import Case

ONE = dict(dims={"N": 3}, seed=1, scale=1.0)


def _fwd(p, d):
    h = p.w * d.x
    return (h * h).sum(), h


def _fwd_item(p, d):
    h = p.w * d.x
    s = float(h.sum().item())            # a Python number: dynamo breaks the graph here
    return (h * h).sum() + 0.0 * s, h


def _fwd_print(p, d):
    h = p.w * d.x
    print("", end="")                    # a print: dynamo breaks the graph here too
    return (h * h).sum(), h


def _bwd(p, d, cache, g):
    return {"w": 2 * g * cache * d.x}


def _bwd_compile_bug(p, d, cache, g):
    scale = 2.0 if torch.compiler.is_compiling() else 1.0
    return {"w": 2 * g * cache * d.x * scale}


def _record(forward, name, backward=_bwd):
    return Model(name=name, dims={"N": Dim(1, 6, 4)}, params={"w": ("N",)}, data={"x": ("N",)},
                 forward=forward, backward=backward)


def test_a_graph_break_is_an_error_naming_its_reason_with_fullgraph():
    for forward, reason in ((_fwd_item, "Tensor.item()"), (_fwd_print, "print")):
        m = _record(forward, forward.__name__.lstrip("_"))
        run = run_model(m, compile="aot_eager", **ONE)
        assert run.verdict == "pass" and "compile graph break" in run.notes     # without: a note
        run = run_model(m, compile="aot_eager", fullgraph=True, **ONE)
        assert run.verdict == "error"
        problem = run.failure.problems[0]
        assert problem.startswith("torch.compile (aot_eager) broke the graph, and fullgraph was asked for"), problem
        assert reason in problem
        assert run.failure.case.command().endswith("--compile aot_eager --compile-fullgraph")


def test_a_model_without_a_graph_break_passes_with_fullgraph():
    run = run_model(_record(_fwd, "no_break"), compile="aot_eager", fullgraph=True, **ONE)
    assert run.verdict == "pass", run.failure and run.failure.problems
    assert not run.notes


def test_wrong_values_under_compile_fail_before_the_graph_break_is_judged():
    def forward(p, d):
        h = p.w * d.x
        torch._dynamo.graph_break()
        return (h * h).sum(), h

    run = run_model(_record(forward, "break_and_bug", _bwd_compile_bug), compile="aot_eager", fullgraph=True, **ONE)
    assert run.verdict == "fail" and run.failure.failing == ["w under torch.compile (aot_eager)"]
    assert "compile graph break" in run.notes


def test_fullgraph_without_compile_changes_nothing():
    assert run_model(_record(_fwd_item, "not_compiled"), fullgraph=True, **ONE).verdict == "pass"
    assert "--compile-fullgraph" not in Case("m", {"N": 2}, "float64", "cpu", 1, 1.0, fullgraph=True).command()


BREAK_FILE = '''
from gradcheck_suite import Dim, Model


def forward(p, d):
    h = p.w * d.x
    s = float(h.sum().item())
    return (h * h).sum() + 0.0 * s, h


def backward(p, d, cache, g):
    return {"w": 2 * g * cache * d.x}


model = Model(name="item_break", dims={"N": Dim(1, 4, 4)}, params={"w": ("N",)}, data={"x": ("N",)},
              forward=forward, backward=backward)
'''


def test_pytest_refuses_a_graph_break_with_its_option(pytester):
    pytester.makepyfile(test_grads="def test_backward(gradcheck_target):\n    gradcheck_target.check()\n")
    pytester.makepyfile(break_model=BREAK_FILE)
    common = ("--gradcheck-device", "cpu", "--gradcheck-examples", "1", "--gradcheck-models-from", "break_model.py",
              "--gradcheck-compile")
    result = pytester.runpytest(*common, "--gradcheck-compile-fullgraph")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*torch.compile (aot_eager) broke the graph, and fullgraph was", "*--compile-fullgraph*"])
    pytester.runpytest(*common).assert_outcomes(passed=1)
