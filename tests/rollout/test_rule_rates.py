"""The error rates of the rule production runs (plan from the default settings, caps
included), by simulation of heartbeats judged by the real decision code (simulate.py).
The figures behind these bounds are in docs/rollout.md (bench/rollout_rule.py)."""

from __future__ import annotations

import pytest

from services.rollout.plan import RolloutPlan
from services.rollout.simulate import EFFECTS, Effect, SimulatedFleet, simulate

RUNS = 2000  # a rate near 5% is measured to about +-1 percentage point (one standard error)
AS_GOOD, SLIGHTLY, FAILURES, TAKEOVERS, MUCH_WORSE = EFFECTS
DEMO = ((0.5, 1.0), SimulatedFleet(robots=4))
EIGHT = ((0.25, 0.5, 1.0), SimulatedFleet(robots=8))


def _rates(settings, fleet, effect: Effect, seed: int = 11) -> dict[str, float]:
    shares, simulated = fleet
    plan = RolloutPlan.from_settings(settings.updated(rollout={"stages": shares}))
    return simulate(plan, simulated, effect, runs=RUNS, seed=seed)


@pytest.mark.parametrize("fleet", [DEMO, EIGHT], ids=["demo", "eight-robots"])
def test_a_candidate_as_good_as_the_champion_is_rolled_back_at_most_alpha_of_the_time(
    settings, fleet
):
    rates = _rates(settings, fleet, AS_GOOD)
    assert rates["rolled back"] <= 0.06  # alpha 0.05 for the rollout, split over two tests
    assert rates["paused"] <= 0.01 and rates["promoted"] >= 0.93


@pytest.mark.parametrize("fleet", [DEMO, EIGHT], ids=["demo", "eight-robots"])
def test_twice_the_takeovers_is_missed_at_most_beta_of_the_time(settings, fleet):
    assert _rates(settings, fleet, TAKEOVERS)["promoted"] <= 0.2


def test_a_failure_rate_25_points_worse_is_caught_as_designed_only_with_a_larger_control(
    settings,
):
    # The failure test's baseline is the control group's own rate, estimated as it goes:
    # with two champion robots (the demo) it misses about a third, above beta.
    assert _rates(settings, EIGHT, FAILURES)["promoted"] <= 0.2
    assert _rates(settings, DEMO, FAILURES)["promoted"] <= 0.4


def test_a_much_worse_candidate_never_gets_through_and_a_slightly_worse_one_often_does_not(
    settings,
):
    assert _rates(settings, DEMO, MUCH_WORSE)["rolled back"] == 1.0
    assert _rates(settings, DEMO, SLIGHTLY)["rolled back"] >= 0.25


def test_rare_takeovers_leave_the_intervention_test_undecided_and_the_cap_pauses(settings):
    rare = (EIGHT[0], SimulatedFleet(robots=8, interventions_per_episode=0.1))
    rates = _rates(settings, rare, AS_GOOD)
    assert 0.02 <= rates["paused"] <= 0.15  # for a fleet manager, not promoted unseen
    assert rates["rolled back"] <= 0.06
