"""The flywheel benchmark's figures, on hand-made worker records."""

import numpy as np

from bench.flywheel_report import Results, headline, night_rows, paired_ci

TASKS = ("reach", "pick-place")


def _record(arm, seed, night, reach, pick, fleet=TASKS, **extra):
    return {
        "arm": arm,
        "seed": seed,
        "night": night,
        "fleet_tasks": list(fleet),
        "eval": {"reach": reach, "pick-place": pick},
        **extra,
    }


def _shift(interventions, operator_steps, steps=1000, successes=5):
    return {
        "episodes": 10,
        "successes": successes,
        "autonomous_successes": successes - 1,
        "interventions": interventions,
        "operator_steps": operator_steps,
        "steps": steps,
        "robot_hours": steps / 80 / 3600,
        "operator_hours": operator_steps / 80 / 3600,
    }


def test_forgetting_is_the_fall_of_a_task_the_fleet_stopped_working_below_its_best():
    records = [
        _record("sirius", 0, 0, [1, 0, 0, 0], [0, 0, 0, 0]),
        _record("sirius", 0, 1, [1, 1, 1, 0], [0, 0, 1, 0]),  # reach at its best: 0.75
        _record("sirius", 0, 2, [1, 0, 0, 0], [1, 1, 1, 1], fleet=("pick-place",)),
    ]
    res = Results(records, TASKS)
    assert res.forgetting("sirius", 1) is None  # no shift yet
    assert res.forgetting("sirius", 2) == 0.5  # 0.75 -> 0.25
    rows = {r["night"]: r for r in night_rows(res)}
    assert rows[2]["success_pick-place"] == 1.0 and rows[2]["success"] == 5 / 8


def test_fleet_figures_are_pooled_over_seeds_and_effort_falls_by_the_stated_factor():
    records = [
        _record("iwr", s, n, [1, 0], [0, 0], shift=_shift(i, op))
        for s in (0, 1)
        for n, i, op in ((0, 0, 0), (1, 40, 400), (2, 8, 80))
    ]
    res = Results(records, TASKS)
    rows = {r["night"]: r for r in night_rows(res)}
    assert rows[1]["operator_time_share"] == 0.4
    assert np.isclose(
        rows[1]["interventions_per_robot_hour"] / rows[2]["interventions_per_robot_hour"], 5
    )
    assert any("5.0x fewer" in line for line in headline(res))


def test_paired_differences_get_an_interval_that_excludes_zero_only_with_evidence():
    better = np.array([1] * 40 + [0] * 10)
    worse = np.array([0] * 40 + [0] * 10)
    d, lo, hi = paired_ci(better, worse)
    assert d == 0.8 and 0 < lo < d < hi <= 1
    d, lo, hi = paired_ci(np.array([1, 0] * 20), np.array([0, 1] * 20))
    assert d == 0 and lo < 0 < hi


def test_a_refused_candidate_that_forgot_shows_though_the_champion_did_not():
    cand = {"dataset_steps": 1, "train_seconds": 1, "promoted": False, "verdict": "fail"}
    records = [
        _record("sirius-no-replay", 0, 0, [1, 1, 0, 0], [0, 0, 0, 0]),
        _record("sirius-no-replay", 0, 1, [1, 1, 1, 0], [0, 0, 0, 0]),  # reach at best: 0.75
        _record(
            "sirius-no-replay",
            0,
            2,
            [1, 1, 1, 0],  # the champion stays: no forgetting on the fleet
            [0, 0, 0, 0],
            fleet=("pick-place",),
            candidate={**cand, "eval": {"reach": [0, 0, 0, 0], "pick-place": [1, 1, 1, 1]}},
        ),
    ]
    res = Results(records, TASKS)
    assert res.forgetting("sirius-no-replay", 2) == 0.0
    assert res.forgetting("sirius-no-replay", 2, candidate=True) == 0.75
    assert next(r for r in night_rows(res) if r["night"] == 2)["candidate_forgetting"] == 0.75
    assert any("candidates after the shift, promoted or not: 0.750" in x for x in headline(res))
