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


def test_a_task_whose_non_inferiority_is_not_shown_makes_the_verdict_inconclusive():
    # pick-place much better; push a little worse, within the margin on the point estimate,
    # but on few seeds the lower bound of its difference reaches past the margin.
    champion = {
        **_results([True] * 10 + [False] * 40),
        **_results([True] * 6 + [False] * 4, "push"),
    }
    candidate = {
        **_results([True] * 40 + [False] * 10),
        **_results([True] * 5 + [False] * 5, "push"),
    }
    verdict = judge(compare(candidate, champion), GateConfig(margin=0.15))
    assert verdict.verdict == INCONCLUSIVE and "push" in verdict.reason
    assert verdict.numbers["tasks"]["push"]["difference_lower_bound"] <= -0.15
    assert verdict.numbers["per_task_alpha"] == pytest.approx(0.025)
    # with many seeds the same small drop is shown to be within the margin
    champion["push"] = dict(enumerate([True] * 60 + [False] * 40))
    candidate["push"] = dict(enumerate([True] * 58 + [False] * 42))
    assert judge(compare(candidate, champion), GateConfig(margin=0.15)).verdict == PASS


def test_paired_bound_uses_the_pairing():
    from services.evaluation.stats import paired_difference_lower_bound

    same = [True] * 30 + [False] * 30
    assert paired_difference_lower_bound(same, same, 0.95) == 0.0
    shifted = [True] * 36 + [False] * 24  # six more successes, nothing lost
    assert paired_difference_lower_bound(shifted, same, 0.95) > 0.0
