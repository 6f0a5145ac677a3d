"""Typed stages read and write the Rollout row's JSON exactly as earlier versions stored it."""

from __future__ import annotations

import json

import pytest

from services.rollout.plan import RolloutPlan
from services.rollout.stages import Stage

# A stage as a running rollout stores it, after its first window.
STORED = {
    "name": "canary",
    "share": 0.25,
    "robots": ["robot-02"],
    "episodes": 4,
    "llr": {"failures": -0.4, "interventions": 0.3},
    "windows": [
        {
            "at": "2026-01-03T09:00:00+00:00",
            "treatment": {"episodes": 4, "failures": 1, "interventions": 2, "hours": 0.5},
            "control": {"episodes": 12, "failures": 5, "interventions": 3, "hours": 1.5},
            "llr": {"failures": -0.4, "interventions": 0.3},
            "decision": "continue",
        }
    ],
    "outcome": None,
    "started_at": "2026-01-03T08:00:00+00:00",
    "cursor": 0,
    "control_total": {"episodes": 12, "failures": 5},
}


def test_a_stored_stage_round_trips_unchanged():
    stage = Stage.from_json(STORED)
    assert (stage.name, stage.robots, stage.cursor, stage.is_last) == (
        "canary",
        ("robot-02",),
        0,
        False,
    )
    assert json.dumps(stage.to_json()) == json.dumps(STORED)  # same keys, same order


def test_a_new_stage_stores_its_declared_spec_and_an_old_one_reads_as_the_default():
    [canary, fleet] = RolloutPlan.of((0.5, 1.0), max_episodes=60).stages("c1", ["a", "b"])
    stored = canary.to_json()
    assert stored == {
        "name": "canary",
        "share": 0.5,
        "robots": list(canary.robots),
        "episodes": 0,
        "llr": {"failures": 0.0, "interventions": 0.0},
        "windows": [],
        "outcome": None,
        "spec": {
            "share": 0.5,
            "metrics": {
                "failures": {"alpha": 0.05, "beta": 0.2, "increase": 0.25},
                "interventions": {"alpha": 0.05, "beta": 0.2, "ratio": 2.0},
            },
            "min_episodes": 12,
            "max_episodes": 60,
            "max_hours": 24.0,
            "pause": False,
        },
    }
    assert Stage.from_json(json.loads(json.dumps(stored))) == canary
    assert fleet.is_last and fleet.robots == ("a", "b")
    # stored before specs: the default spec, with the caps
    old = Stage.from_json(STORED)
    assert (
        old.spec is None
        and old.plan.max_episodes == 240
        and set(old.plan.tests)
        == {
            "failures",
            "interventions",
        }
    )


def test_stages_are_frozen():
    stage = Stage.from_json(STORED)
    with pytest.raises(AttributeError):
        stage.outcome = "passed"
    assert stage.with_(outcome="passed").outcome == "passed" and stage.outcome is None
