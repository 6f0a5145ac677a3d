"""What the overview and candidate pages plot: nights, champion history, learning curve and
the fleet episodes behind a dataset, read from a real store."""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import NotFound
from services.readmodel import evidence
from services.store import session_scope
from tests.dashboards.conftest import ROBOTS, TAKEOVER, seed_fleet_store


@pytest.fixture
def store(settings, tmp_path):
    seed_fleet_store(settings, tmp_path)
    return settings


def test_nights_come_oldest_first_with_their_fleet_and_their_candidates_evaluation(store):
    with session_scope(store.db_url) as session:
        nights = evidence.nights_history(store, session)
    assert [(n["night"], n["state"], n["candidate"]["id"]) for n in nights] == [
        (1, "completed", "c2"),
        (2, "completed", "c3"),
    ]
    assert [n["started_at"].day for n in nights] == [1, 2]
    # the second night's fleet needed the operator less: the flywheel at work
    first, second = (n["fleet"]["interventions_per_robot_hour"] for n in nights)
    assert second < first
    assert nights[0]["evaluation"] is None  # candidate 2 was never evaluated
    evaluation = nights[1]["evaluation"]
    assert (evaluation["model_version"], evaluation["n"]) == ("3", 40)
    assert evaluation["rate"] == pytest.approx(30 / 40)
    assert evaluation["champion_rate"] == pytest.approx(12 / 40)


def test_the_champion_history_lists_every_promotion(store):
    with session_scope(store.db_url) as session:
        history = evidence.champion_history(session)
    assert [(h["generation"], h["from_version"], h["to_version"], h["kind"]) for h in history] == [
        (1, None, "2", "promote")
    ]
    assert history[0]["actor"] == "seed" and history[0]["reason"] == "first policy"


def test_evaluation_success_pairs_the_candidate_with_its_champion_on_the_same_seeds(store):
    with session_scope(store.db_url) as session:
        worse = evidence.evaluation_success(session, "c4")
        assert evidence.evaluation_success(session, "c5") is None  # not evaluated yet
    assert (worse["candidate_id"], worse["model_version"], worse["champion_version"]) == (
        "c4",
        "4",
        "2",
    )
    assert worse["rate"] == pytest.approx(5 / 40) and worse["champion_rate"] == pytest.approx(0.3)
    low, high = worse["ci"]
    assert low < worse["rate"] < high
    assert worse["champion_ci"][0] < worse["champion_rate"] < worse["champion_ci"][1]


def test_the_learning_curve_runs_night_by_night_and_ends_at_the_candidate(store):
    with session_scope(store.db_url) as session:
        tonight = evidence.learning_curve(session, "3")
        by_hand = evidence.learning_curve(session, "c4")  # by candidate id, trained by hand
        with pytest.raises(NotFound):
            evidence.learning_curve(session, "99")
    # candidate 2 (night 1) has no evaluation, so the curve starts at night 2
    assert [(p["night"], p["model_version"]) for p in tonight] == [(2, "3")]
    assert [(p["night"], p["model_version"]) for p in by_hand] == [(2, "3"), (None, "4")]
    assert [p["rate"] for p in by_hand] == pytest.approx([0.75, 0.125])


def test_dataset_fleet_episodes_show_where_the_operator_took_over(store):
    with session_scope(store.db_url) as session:
        episodes = evidence.dataset_fleet_episodes(store, session, "d1")
        assert evidence.dataset_fleet_episodes(store, session, "no-such-dataset") == []
    # failures or takeovers only: robot-00 both nights, robot-01 on night 1
    assert sorted(e["robot_id"] for e in episodes) == [ROBOTS[0], ROBOTS[0], ROBOTS[1]]
    assert all(e["interventions"] == 1 for e in episodes)
    assert [e["operator_spans"] for e in episodes] == [[TAKEOVER]] * 3
    assert {e["outcome"] for e in episodes} == {"success", "failure"}
    for e in episodes:
        assert np.shape(e["states"]) == (60, 4) and np.shape(e["actions"]) == (60, 2)


def test_operator_spans_are_half_open_step_ranges():
    operator = np.array([0, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    assert evidence.operator_spans(operator) == [(1, 3), (5, 6), (7, 8)]
    assert evidence.operator_spans(np.zeros(5, dtype=bool)) == []
