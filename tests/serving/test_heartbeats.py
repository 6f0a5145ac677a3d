"""A robot's heartbeat counts once, only for its own version, and only if it could be true."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from services.serving.assignments import assign
from services.serving.credentials import enroll_robot
from services.serving.heartbeats import (
    HeartbeatConflict,
    HeartbeatReport,
    ImplausibleHeartbeat,
    accept_heartbeat,
)
from services.store import session_scope
from services.store.db import engine_for
from services.store.models import Heartbeat, Robot, utcnow

ID = "6b1f6c1e-29a5-4d3e-9a57-0d1b3c2f4e01"


def _report(**changes) -> HeartbeatReport:
    fields = dict(policy_version="1", episodes=3, failures=1, interventions=2, active_seconds=30.0)
    return HeartbeatReport(**{**fields, **changes})


@pytest.fixture
def robot(store_settings):
    """Robot r0 on version 1, enrolled an hour ago."""
    with session_scope(store_settings.db_url, write=True) as session:
        enroll_robot(session=session, robot_id="r0", tasks=["toy-reach"], group="g", actor="t")
        assign(session=session, robot_ids=["r0"], version="1", actor="t", reason="t")
        robot = session.get(Robot, "r0")
        robot.credential_issued_at = robot.assigned_at = utcnow() - timedelta(hours=1)
    return "r0"


def _accept(settings, robot_id, heartbeat_id=ID, **changes) -> bool:
    """True: stored; False: a retry, counted before."""
    with session_scope(settings.db_url, write=True) as session:
        return None is not accept_heartbeat(
            session=session,
            settings=settings,
            robot=session.get(Robot, robot_id),
            heartbeat_id=heartbeat_id,
            report=_report(**changes),
        )


def _stored(settings) -> list[tuple]:
    with session_scope(settings.db_url) as session:
        beats = session.scalars(select(Heartbeat).order_by(Heartbeat.id)).all()
        return [(b.heartbeat_id, b.policy_version, b.episodes) for b in beats]


def test_a_retried_heartbeat_counts_once_and_a_reused_id_with_other_counts_is_refused(
    store_settings, robot
):
    assert _accept(store_settings, robot) is True
    assert _accept(store_settings, robot) is False  # the retry: same id, same counts
    with pytest.raises(HeartbeatConflict, match="needs a new heartbeat_id"):
        _accept(store_settings, robot, failures=3)
    assert _stored(store_settings) == [(ID, "1", 3)]


def test_a_robot_reports_for_its_version_or_the_previous_one_shortly_after_a_change(
    store_settings, robot
):
    with pytest.raises(HeartbeatConflict, match="assigned version 1"):
        _accept(store_settings, robot, policy_version="7")
    with session_scope(store_settings.db_url, write=True) as session:
        assign(session=session, robot_ids=[robot], version="2", actor="t", reason="t")
    # just switched: the episodes on 1 since the previous heartbeat still count
    assert _accept(store_settings, robot, "aaaaaaaa-0000-4000-8000-000000000001")
    assert _accept(
        store_settings, robot, "aaaaaaaa-0000-4000-8000-000000000002", policy_version="2"
    )
    with session_scope(store_settings.db_url, write=True) as session:
        session.get(Robot, robot).assigned_at -= timedelta(
            seconds=store_settings.fleet.fleet_version_grace_s + 1
        )
    with pytest.raises(HeartbeatConflict, match="assigned version 2"):
        _accept(store_settings, robot, "aaaaaaaa-0000-4000-8000-000000000003")
    assert [v for _, v, _ in _stored(store_settings)] == ["1", "2"]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"episodes": 50, "failures": 50, "active_seconds": 4.0}, "active_seconds", "at least"),
        ({"episodes": 2, "interventions": 400}, "interventions", "at most 20 per episode"),
        ({"episodes": 0, "failures": 0, "interventions": 1}, "interventions", "at most"),
        ({"active_seconds": 3600.0 + 120}, "active_seconds", "have passed"),
    ],
)
def test_counts_that_cannot_be_true_for_the_time_reported_are_refused(
    store_settings, robot, changes, field, message
):
    with pytest.raises(ImplausibleHeartbeat, match=message) as refused:
        _accept(store_settings, robot, **changes)
    assert refused.value.field == field
    assert _stored(store_settings) == []


def test_active_time_is_bounded_by_the_wall_time_since_the_previous_heartbeat(
    store_settings, robot
):
    slack = store_settings.fleet.fleet_heartbeat_slack_s
    assert _accept(store_settings, robot, active_seconds=3600.0)  # the hour since enrollment
    with pytest.raises(ImplausibleHeartbeat, match="have passed"):
        _accept(
            store_settings, robot, "aaaaaaaa-0000-4000-8000-000000000001", active_seconds=slack + 5
        )
    assert _accept(
        store_settings, robot, "aaaaaaaa-0000-4000-8000-000000000002", active_seconds=slack
    )


@pytest.mark.postgres
@pytest.mark.parametrize("store_settings", ["postgres"], indirect=True)
@pytest.mark.parametrize("counts", [{}, {"failures": 3}], ids=["same counts", "other counts"])
def test_of_two_concurrent_requests_with_one_heartbeat_id_one_is_stored(
    store_settings, robot, counts
):
    """The second request read "not stored yet" while the first had not committed: its
    INSERT waits for the first and then gives way (PostgreSQL; SQLite serialises writers
    before the read). With the same counts it is a retry; with others a conflict."""
    outcome: dict[str, object] = {}

    def second() -> None:
        try:
            outcome["stored"] = _accept(store_settings, robot, **counts)
        except HeartbeatConflict as exc:
            outcome["refused"] = exc

    with session_scope(store_settings.db_url, write=True) as first:
        accept_heartbeat(
            session=first,
            settings=store_settings,
            robot=first.get(Robot, robot),
            heartbeat_id=ID,
            report=_report(),
        )
        thread = threading.Thread(target=second)
        thread.start()
        _until_one_waits_on_a_lock(store_settings.db_url)
    thread.join(timeout=30)

    if counts:
        assert "needs a new heartbeat_id" in str(outcome["refused"])
    else:
        assert outcome == {"stored": False}
    assert _stored(store_settings) == [(ID, "1", 3)]


def _until_one_waits_on_a_lock(url: str) -> None:
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine_for(url).connect() as conn:
            if conn.scalar(waiting):
                return
        time.sleep(0.05)
    raise AssertionError("the second request never waited for the first one's insert")
