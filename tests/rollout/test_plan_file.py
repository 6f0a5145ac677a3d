"""A rollout plan declared per stage in a JSON file (FLYWHEEL_ROLLOUT_PLAN), validated with
the stage and key named; without one, the FLYWHEEL_ROLLOUT_* settings keep working."""

from __future__ import annotations

import json

import pytest

from services.config import Settings
from services.rollout.plan import PlanError, RolloutPlan

PLAN = {
    "defaults": {"max_hours": 12},
    "stages": [
        {"share": 0.25, "max_episodes": 60, "metrics": {"failures": {"increase": 0.2}}},
        {"share": 0.5, "pause": True},
        {"share": 1.0},
    ],
}


def _plan(settings, tmp_path, plan) -> RolloutPlan:
    path = tmp_path / "plan.json"
    path.write_text(plan if isinstance(plan, str) else json.dumps(plan))
    return RolloutPlan.from_settings(settings.updated(rollout={"plan": path}))


def test_each_stage_takes_what_it_declares_then_the_plan_defaults_then_the_settings(
    settings, tmp_path
):
    canary, half, fleet = _plan(settings, tmp_path, PLAN).specs
    assert set(canary.tests) == {"failures"} and canary.tests["failures"].increase == 0.2
    assert canary.tests["failures"].alpha == 0.025  # the settings' alpha, split over 2 tests
    assert (canary.max_episodes, canary.max_hours, canary.pause) == (60, 12.0, False)
    assert (
        half.pause
        and half.max_episodes == 240
        and set(half.tests)
        == {
            "failures",
            "interventions",
        }
    )
    assert half.tests["interventions"].ratio == 2.0 and fleet.share == 1.0


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("{not json", "not JSON"),
        ({"stage": []}, 'a list of "stages"'),
        (
            {"stages": [{"share": 0.5, "max_episode": 9}, {"share": 1.0}]},
            "stage 1: unknown key 'max_episode'; did you mean 'max_episodes'?",
        ),
        (
            {"stages": [{"share": 0.5, "metrics": {"takeovers": {}}}, {"share": 1.0}]},
            "stage 1.metrics: unknown key 'takeovers'",
        ),
        (
            {"stages": [{"share": 0.5, "metrics": {"failures": {"ratio": 2}}}, {"share": 1.0}]},
            "stage 1.metrics.failures: unknown key 'ratio'",
        ),
        (
            {
                "stages": [
                    {"share": 0.5, "metrics": {"interventions": {"ratio": 0.5}}},
                    {"share": 1},
                ]
            },
            "ratio must be above 1",
        ),
        (
            {"stages": [{"share": 0.5, "min_episodes": 30, "max_episodes": 20}, {"share": 1.0}]},
            "stage 1: max_episodes (20) is below min_episodes (30)",
        ),
        ({"stages": [{"share": 0.5}]}, "must end at the whole fleet"),
        ({"stages": [{"max_hours": 3}, {"share": 1.0}]}, "stage 1: 'share' is required"),
    ],
)
def test_a_plan_with_a_mistake_is_refused_naming_the_stage_and_key(
    settings, tmp_path, plan, message
):
    with pytest.raises(PlanError) as refused:
        _plan(settings, tmp_path, plan)
    assert message in str(refused.value)


def test_a_missing_plan_file_is_refused_clearly(settings, tmp_path):
    missing = settings.updated(rollout={"plan": tmp_path / "nowhere.json"})
    with pytest.raises(PlanError, match="cannot read the rollout plan .*nowhere.json"):
        RolloutPlan.from_settings(missing)


def test_without_a_plan_file_the_stage_settings_still_make_the_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path))
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_STAGES", "[0.5, 1.0]")
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_MAX_EPISODES", "48")
    plan = RolloutPlan.from_settings(Settings())
    assert [s.share for s in plan.specs] == [0.5, 1.0]
    assert {s.max_episodes for s in plan.specs} == {48}
    assert all(not s.pause for s in plan.specs)
