"""The review pages' plots carry the numbers the read model gave them."""

from __future__ import annotations

import json

import pytest

from services.api import charts


def _trace(figure, name):
    [trace] = [t for t in figure.data if t.name == name]
    return trace


def test_fleet_success_plots_both_rates_in_percent_and_skips_nights_with_no_fleet():
    nights = [
        {"night": 1, "fleet": {"episodes": 4, "autonomous_success": 0.5, "success": 0.75}},
        {"night": 2, "fleet": {}},  # nothing ingested that night
        {"night": 3, "fleet": {"episodes": 4, "autonomous_success": 0.75, "success": 1.0}},
    ]
    figure = charts.fleet_success(nights)
    assert [t.name for t in figure.data] == ["completed alone", "completed"]
    assert list(_trace(figure, "completed alone").x) == [1, 3]
    assert list(_trace(figure, "completed alone").y) == [50.0, 75.0]
    assert list(_trace(figure, "completed").y) == [75.0, 100.0]
    assert tuple(figure.layout.yaxis.range) == (0, 100)


def test_fleet_interventions_plots_each_nights_rate():
    nights = [
        {"night": 1, "fleet": {"interventions_per_robot_hour": 6.0}},
        {"night": 2, "fleet": {"interventions_per_robot_hour": None}},
        {"night": 3, "fleet": {"interventions_per_robot_hour": 2.5}},
    ]
    [trace] = charts.fleet_interventions(nights).data
    assert (list(trace.x), list(trace.y)) == ([1, 3], [6.0, 2.5])


def test_the_learning_curve_shows_candidates_with_intervals_and_champions_on_the_same_seeds():
    points = [
        {
            "night": 1,
            "model_version": "2",
            "rate": 0.5,
            "ci": [0.4, 0.65],
            "champion_rate": None,
            "champion_ci": None,
        },
        {
            "night": None,  # trained by hand
            "model_version": "3",
            "rate": 0.75,
            "ci": [0.6, 0.85],
            "champion_rate": 0.5,
            "champion_ci": [0.35, 0.65],
        },
    ]
    figure = charts.learning_curve(points, highlight="3")
    candidate = _trace(figure, "candidate")
    assert list(candidate.x) == ["night 1: v2", "v3"]
    assert list(candidate.y) == [50.0, 75.0]
    assert list(candidate.error_y.array) == pytest.approx([15.0, 10.0])
    assert list(candidate.error_y.arrayminus) == pytest.approx([10.0, 15.0])
    assert list(candidate.marker.size) == [8, 14]  # the page's candidate stands out
    champion = _trace(figure, "champion (same seeds)")
    assert (list(champion.x), list(champion.y)) == (["v3"], [50.0])


def test_the_champion_timeline_marks_rollbacks_and_orders_versions_numerically():
    history = [
        {"at": "2026-01-01", "to_version": "2", "kind": "promote", "actor": "a", "reason": None},
        {"at": "2026-01-02", "to_version": "10", "kind": "promote", "actor": "b", "reason": "x"},
        {"at": "2026-01-03", "to_version": "2", "kind": "rollback", "actor": "c", "reason": "bad"},
    ]
    figure = charts.champion_timeline(history)
    [trace] = figure.data
    assert list(trace.y) == ["v2", "v10", "v2"]
    assert list(trace.marker.symbol) == ["circle", "circle", "x"]
    assert trace.text[2] == "rollback by c: bad"
    assert list(figure.layout.yaxis.categoryarray) == ["v2", "v10"]


def test_task_success_puts_candidate_and_champion_side_by_side():
    tasks = [
        {
            "task": "pick-place",
            "candidate": {"successes": 30, "n": 40, "rate": 0.75, "ci": [0.6, 0.86]},
            "champion": {"successes": 12, "n": 40, "rate": 0.3, "ci": [0.18, 0.46]},
        },
        {
            "task": "reach",
            "candidate": {"successes": 8, "n": 10, "rate": 0.8, "ci": [0.49, 0.94]},
            "champion": None,  # a new task: no champion result
        },
    ]
    figure = charts.task_success(tasks)
    assert figure.layout.barmode == "group"
    candidate, champion = _trace(figure, "candidate"), _trace(figure, "champion")
    assert (list(candidate.x), list(candidate.y)) == (["pick-place", "reach"], [75.0, 80.0])
    assert list(candidate.text) == ["30/40", "8/10"]
    assert (list(champion.x), list(champion.y)) == (["pick-place"], [30.0])


def test_a_trajectory_has_a_line_per_dimension_and_shades_the_operators_steps():
    states = [[0.0, 1.0], [0.5, 1.5], [1.0, 2.0]]
    actions = [[0.1], [0.2], [0.3]]
    figure = charts.trajectory(states, actions, title="t", operator_spans=[(1, 3)])
    assert [t.name for t in figure.data] == ["state[0]", "state[1]", "action[0]"]
    assert list(figure.data[1].y) == [1.0, 1.5, 2.0]
    # the same steps shaded in the state and the action panel, half a step either side
    assert [(s.x0, s.x1) for s in figure.layout.shapes] == [(0.5, 2.5), (0.5, 2.5)]
    assert "operator" in {a.text for a in figure.layout.annotations}


def test_the_rollout_watch_plots_rates_llrs_and_the_rollback_thresholds():
    window = {
        "treatment": {"episodes": 4, "failures": 1, "interventions": 3, "hours": 0.5},
        "control": {"episodes": 12, "failures": 2, "interventions": 2, "hours": 0.0},
        "llr": {"failures": 0.4, "interventions": 1.2},
    }
    rollout = {
        "id": 7,
        "from_version": "2",
        "to_version": "5",
        "stages": [
            {"name": "canary", "windows": [window, window]},
            {"name": "fleet", "windows": []},
        ],
    }
    figure = charts.rollout_watch(rollout, {"failures": 2.9, "interventions": 2.9})
    candidate = _trace(figure, "v5")
    assert list(candidate.x) == ["1. canary", "2. canary"]
    assert list(candidate.y) == [6.0, 6.0]  # interventions per robot-hour
    assert list(_trace(figure, "v2 (champion)").y) == [None, None]  # no hours: no rate
    assert list(_trace(figure, "LLR interventions").y) == [1.2, 1.2]
    [threshold] = figure.layout.shapes  # one line for both tests sharing a threshold
    assert threshold.y0 == threshold.y1 == 2.9
    assert any(
        a.text == "rolls back: failures and interventions" for a in figure.layout.annotations
    )
    assert figure.layout.title.text == "Rollout 7: watched metrics"


def test_figures_are_safe_inside_a_script_element():
    figure = charts.champion_timeline(
        [
            {
                "at": "2026-01-01",
                "to_version": "2",
                "kind": "promote",
                "actor": "a",
                "reason": "</script>",
            }
        ]
    )
    text = str(charts.to_json(figure))
    assert "</script>" not in text
    assert json.loads(text)["data"][0]["text"] == ["promote by a: </script>"]
