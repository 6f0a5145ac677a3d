"""The rollout's sequential test and plans: error rates under repeated looks, stages."""

import numpy as np
import pytest

from services.rollout.plan import RolloutPlan
from services.rollout.sequential import CONTINUE, NOT_WORSE, SPRT, WORSE, ProportionSPRT


def _run(test: SPRT, rng, ratio: float, windows: int = 30) -> str:
    """One rollout: each window, 1 candidate robot and 3 champion robots work an hour;
    the champion's robots have 2 interventions per hour, the candidate's ``ratio`` times that."""
    llr = 0.0
    for _ in range(windows):
        llr += test.window_llr(rng.poisson(2 * ratio), 1.0, rng.poisson(6), 3.0)
        decision = test.decide(llr)
        if decision != CONTINUE:
            return decision
    return CONTINUE


def test_looking_at_every_window_keeps_the_false_rollback_rate_under_alpha():
    test, rng = SPRT(alpha=0.05, beta=0.2, ratio=2.0), np.random.default_rng(7)
    outcomes = [_run(test, rng, ratio=1.0) for _ in range(2000)]
    false_rollbacks = outcomes.count(WORSE) / len(outcomes)
    assert false_rollbacks <= 0.05  # Wald's bound holds with a look at every window
    assert outcomes.count(NOT_WORSE) / len(outcomes) > 0.8


def test_a_twice_as_bad_candidate_is_caught_at_least_at_the_designed_power():
    test, rng = SPRT(alpha=0.05, beta=0.2, ratio=2.0), np.random.default_rng(8)
    outcomes = [_run(test, rng, ratio=2.0) for _ in range(2000)]
    assert outcomes.count(WORSE) / len(outcomes) >= 0.75
    much_worse = [_run(test, rng, ratio=4.0, windows=3) for _ in range(500)]
    assert much_worse.count(WORSE) / len(much_worse) > 0.9  # caught within 3 windows


def test_a_window_without_exposure_says_nothing_and_bad_parameters_are_refused():
    test = SPRT()
    assert test.window_llr(5, 0.0, 3, 1.0) == 0.0 and test.window_llr(5, 1.0, 3, 0.0) == 0.0
    assert test.window_llr(6, 1.0, 3, 1.0) > 0 > test.window_llr(3, 1.0, 3, 1.0)  # equal rates
    for bad in ({"alpha": 0}, {"beta": 1.2}, {"alpha": 0.6, "beta": 0.5}, {"ratio": 1.0}):
        with pytest.raises(ValueError):
            SPRT(**bad)


def test_stages_grow_from_a_canary_to_the_whole_fleet_and_differ_per_version():
    robots = [f"robot-{i:02d}" for i in range(10)]
    stages = RolloutPlan.of((0.1, 0.5, 1.0)).stages("3", robots)
    assert [s.name for s in stages] == ["canary", "50%", "fleet"]
    sizes = [len(s.robots) for s in stages]
    assert sizes == [1, 5, 10]
    assert set(stages[0].robots) < set(stages[1].robots) < set(stages[2].robots)
    assert stages == RolloutPlan.of((0.1, 0.5, 1.0)).stages("3", list(reversed(robots)))
    canaries = {
        RolloutPlan.of((0.1, 1.0)).stages(str(i), robots)[0].robots[0] for i in range(1, 21)
    }
    assert len(canaries) > 3  # not always the same robot
    # two robots: 25% and 50% would both be one robot; the plan keeps one canary stage
    assert [s.name for s in RolloutPlan.of((0.25, 0.5, 1.0)).stages("c", ["a", "b"])] == [
        "canary",
        "fleet",
    ]


@pytest.mark.parametrize("shares", [(), (0.5,), (0.5, 0.2, 1.0), (0.0, 1.0), (0.5, 0.5, 1.0)])
def test_a_plan_must_grow_to_the_whole_fleet(shares):
    with pytest.raises(ValueError):
        RolloutPlan.of(shares)


def _proportion_run(
    test: ProportionSPRT, rng, p_candidate: float, windows: int = 20, canary: int = 1
) -> str:
    """``canary`` of 4 robots work 4 episodes a window on the candidate, the rest on the
    champion; the champion's robots fail 60% of the time."""
    llr, control = 0.0, [0, 0]
    for _ in range(windows):
        control[0] += rng.binomial(4 * (4 - canary), 0.6)
        control[1] += 4 * (4 - canary)
        llr += test.window_llr(rng.binomial(4 * canary, p_candidate), 4 * canary, *control)
        decision = test.decide(llr)
        if decision != CONTINUE:
            return decision
    return CONTINUE


def test_the_failure_test_rarely_rolls_back_an_equal_candidate_and_catches_a_hopeless_one():
    test, rng = ProportionSPRT(alpha=0.05, beta=0.2, increase=0.25), np.random.default_rng(9)
    equal = [_proportion_run(test, rng, 0.6) for _ in range(2000)]
    assert equal.count(WORSE) / len(equal) <= 0.05
    # A candidate that never completes a task alone, on two canary robots of four:
    hopeless = [_proportion_run(test, rng, 1.0, windows=2, canary=2) for _ in range(500)]
    assert hopeless.count(WORSE) / len(hopeless) > 0.9  # caught within 2 windows (95% here)
    with pytest.raises(ValueError):
        test.window_llr(5, 4, 1, 2)
