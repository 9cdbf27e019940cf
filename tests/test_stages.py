"""The check as a list of stages (gradcheck_suite.check.pipeline) and the one map from findings
to a verdict (gradcheck_suite.check.result.decide)."""
import importlib
import inspect
import pkgutil

from gradcheck_suite import DISAGREE, FAIL, NONDIFF

from gradcheck_suite.check import pipeline, stages
from gradcheck_suite.check.result import decide
from gradcheck_suite.check.state import CaseState
from gradcheck_suite.verdict.oracles import Finding

A, KINK, M, N, U, AG = (Finding.AGREE, Finding.KINK, Finding.FOR_MANUAL, Finding.NEITHER, Finding.UNRESOLVED,
                        Finding.FOR_AUTOGRAD)


def test_every_stage_module_has_one_run_of_one_signature_and_is_listed_once():
    listed = [s.run.__module__ for s in pipeline.STAGES]
    assert len(listed) == len(set(listed))
    for info in pkgutil.iter_modules(stages.__path__):
        module = importlib.import_module(f"{stages.__name__}.{info.name}")
        assert module.__name__ in listed, f"{info.name} is not in pipeline.STAGES"
        params = list(inspect.signature(module.run).parameters.values())
        assert [p.annotation for p in params] in (["CaseState"], [CaseState]), info.name


def test_a_finding_for_autograd_fails_only_where_the_gradients_differ():
    assert decide({"w": [A, AG]}).verdict == FAIL and decide({"w": [A, AG]}).failing == ["w"]
    assert decide({"w": [U]}).verdict == FAIL
    assert decide({"w": [AG]}, mismatched=False).verdict is None


def test_a_finding_for_the_manual_gradient_or_for_neither_is_a_dispute_unless_finite_differences_are_alone():
    assert decide({"w": [M], "b": [A]}).verdict == DISAGREE and decide({"w": [M]}).disputed == ["w"]
    assert decide({"w": [N]}).verdict == DISAGREE
    two_way = decide({"w": [N], "b": [A]}, two_way=True)
    assert two_way.verdict == FAIL and two_way.failing == ["w"] and two_way.disputed == []


def test_kinks_are_set_aside_where_the_rest_agree_only_when_elements_are_judged_one_by_one():
    assert decide({"w": [KINK]}).verdict == NONDIFF
    assert decide({"w": [KINK], "b": [A]}).verdict == NONDIFF
    aside = decide({"w": [KINK], "b": [A]}, kinks_aside=True)
    assert aside.verdict is None and aside.set_aside and aside.kinks == ["w"]
