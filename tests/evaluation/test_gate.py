import pytest

from services.evaluation.closed_loop import compare
from services.evaluation.gate import FAIL, INCONCLUSIVE, PASS, GateConfig, judge
from services.evaluation.stats import mcnemar_greater, wilson


def _results(successes: list[bool], task: str = "pick-place") -> dict[str, dict[int, bool]]:
    return {task: dict(enumerate(successes))}


def test_wilson_interval_contains_the_rate_and_stays_in_unit_range():
    rate = wilson(0, 20)
    assert rate.low == 0.0 and 0.1 < rate.high < 0.2
    rate = wilson(45, 50)
    assert rate.low < 0.9 < rate.high <= 1.0


def test_mcnemar_uses_only_discordant_pairs():
    assert mcnemar_greater(0, 0) == 1.0
    assert mcnemar_greater(10, 0) == pytest.approx(0.5**10)
    assert mcnemar_greater(5, 5) > 0.5


def test_clearly_better_candidate_passes():
    champion = _results([True] * 10 + [False] * 40)
    candidate = _results([True] * 30 + [False] * 20)
    verdict = judge(compare(candidate, champion))
    assert verdict.verdict == PASS
    assert verdict.numbers["candidate_only"] == 20 and verdict.numbers["p_value"] < 0.05


def test_candidate_no_better_fails_and_slightly_better_is_inconclusive():
    champion = _results([True] * 20 + [False] * 30)
    assert judge(compare(champion, champion)).verdict == FAIL
    slightly = _results([True] * 22 + [False] * 28)
    assert judge(compare(slightly, champion)).verdict == INCONCLUSIVE


def test_regression_on_one_task_fails_even_when_better_overall():
    champion = {
        **_results([True] * 10 + [False] * 40, "push"),
        **_results([True] * 30 + [False] * 20),
    }
    candidate = {**_results([True] * 50, "push"), **_results([True] * 10 + [False] * 40)}
    verdict = judge(compare(candidate, champion), GateConfig(margin=0.1))
    assert verdict.verdict == FAIL and "pick-place" in verdict.reason


def test_first_policy_passes_without_a_champion():
    verdict = judge(compare(_results([False] * 10), None))
    assert verdict.verdict == PASS and "no champion" in verdict.reason


def test_gate_config_is_validated():
    with pytest.raises(ValueError):
        GateConfig(alpha=0)
