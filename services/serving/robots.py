"""The robot-facing side: provisioning, assignments with download URI and checksum, and
heartbeats. Credentials: ``credentials.py``; the checks a robot's heartbeat passes:
``heartbeats.py``.

Robots reach these through the robot-facing API (``services/api/routes/robots.py``); the
simulated fleet does too, over HTTP, as real robots would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from policies.checkpoint import checkpoint_checksum
from services.config import Settings
from services.errors import NotFound
from services.registry.ledger import champion_of
from services.registry.mlflow_registry import policy_checkpoint
from services.serving.assignments import assign, assignment_of, register_robots
from services.store.models import Heartbeat, Robot, utcnow


def provision_robots(
    *, session: Session, robot_ids: Sequence[str], tasks: Sequence[str], group: str = "default"
) -> list[Robot]:
    """Register robots (an admin's job, not the robots'); a new robot starts on the champion.

    They have no credential yet: ``credentials.enroll_robot`` gives them one.
    """
    robots = register_robots(session=session, robot_ids=robot_ids, tasks=tasks, group=group)
    session.flush()
    champion = champion_of(session=session)
    fresh = [r.id for r in robots if r.policy_version is None]
    if champion and fresh:
        assign(
            session=session,
            robot_ids=fresh,
            version=champion,
            actor="fleet",
            reason="new robot starts on the champion",
        )
    return robots


def robot_assignment(*, session: Session, settings: Settings, robot_id: str) -> dict[str, Any]:
    """What a robot should run: model version, where to download it, and its checksum."""
    version = assignment_of(session=session, robot_id=robot_id)
    if version is None:
        return {"robot_id": robot_id, "model_version": None, "model_uri": None, "checksum": None}
    return {
        "robot_id": robot_id,
        "model_version": version,
        "model_uri": f"models:/{settings.registry.model_name}/{version}",
        "checksum": checkpoint_checksum(policy_checkpoint(settings, version)),
    }


def record_heartbeat(
    *,
    session: Session,
    robot_id: str,
    policy_version: str | None,
    episodes: int = 0,
    failures: int = 0,
    interventions: int = 0,
    active_seconds: float = 0.0,
    heartbeat_id: str | None = None,
    safety_events: int = 0,
    emergency_stop: bool = False,
) -> Heartbeat | None:
    """Store what a robot reports since its previous heartbeat; None when the robot's
    heartbeat with this ``heartbeat_id`` is stored already (a retry, or a concurrent
    request with the same id that got there first: only one of them is stored).

    Stores as told: a robot's own reports come through ``services/serving/heartbeats.py``,
    which checks them (once, for the robot's version, plausible) before they get here.
    """
    robot = session.get(Robot, robot_id)
    if robot is None:
        raise NotFound(f"unknown robot {robot_id!r}: register it first")
    if failures > episodes:
        raise ValueError(f"{failures} failures in {episodes} episodes")
    # One INSERT that gives way to a stored twin (ON CONFLICT DO NOTHING on the unique
    # (robot_id, heartbeat_id) index), not a savepoint around an INSERT that may fail: two
    # round trips fewer on every heartbeat. A NULL heartbeat_id never conflicts.
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    heartbeat = session.scalar(
        insert(Heartbeat)
        .values(
            robot_id=robot_id,
            heartbeat_id=heartbeat_id,
            policy_version=policy_version,
            episodes=episodes,
            failures=failures,
            interventions=interventions,
            active_seconds=active_seconds,
            safety_events=safety_events,
            emergency_stop=emergency_stop,
        )
        .on_conflict_do_nothing(index_elements=["robot_id", "heartbeat_id"])
        .returning(Heartbeat)
    )
    if heartbeat is not None:
        robot.last_seen = utcnow()
    return heartbeat
