"""The robot-facing side: provisioning, the assignment a robot asks for, heartbeats."""

from __future__ import annotations

import pytest

from services.errors import NotFound
from services.registry.ledger import promote
from services.serving.robots import provision_robots, record_heartbeat, robot_assignment
from services.store import session_scope
from services.store.models import Heartbeat, Robot


def test_robots_provisioned_before_a_champion_have_nothing_to_run(store_settings):
    with session_scope(store_settings.db_url, write=True) as session:
        provision_robots(session=session, robot_ids=["r0"], tasks=["toy-reach"])
        answer = robot_assignment(session=session, settings=store_settings, robot_id="r0")
        assert answer == {
            "robot_id": "r0",
            "model_version": None,
            "model_uri": None,
            "checksum": None,
        }
        assert session.get(Robot, "r0").last_seen is not None  # the robot asked


def test_a_new_robot_starts_on_the_champion_and_an_old_one_keeps_its_version(store_settings):
    with session_scope(store_settings.db_url, write=True) as session:
        provision_robots(session=session, robot_ids=["r0"], tasks=["toy-reach"])
        promote(session=session, expected=None, new="1", candidate_id=None, actor="t", reason="t")
        session.get(Robot, "r0").policy_version = "0"
        provision_robots(session=session, robot_ids=["r0", "r1"], tasks=["toy-reach"])
        assert {r: session.get(Robot, r).policy_version for r in ("r0", "r1")} == {
            "r0": "0",
            "r1": "1",
        }


def test_heartbeats_are_stored_and_impossible_ones_refused(store_settings):
    with session_scope(store_settings.db_url, write=True) as session:
        provision_robots(session=session, robot_ids=["r0"], tasks=["toy-reach"])
        record_heartbeat(
            session=session,
            robot_id="r0",
            policy_version="1",
            episodes=3,
            failures=1,
            interventions=2,
            active_seconds=60.0,
        )
        with pytest.raises(ValueError, match="2 failures in 1 episodes"):
            record_heartbeat(
                session=session, robot_id="r0", policy_version="1", episodes=1, failures=2
            )
        with pytest.raises(NotFound, match="register it first"):
            record_heartbeat(session=session, robot_id="r9", policy_version="1")
        session.flush()
        [beat] = session.query(Heartbeat).all()
        assert (beat.episodes, beat.failures, beat.interventions) == (3, 1, 2)
