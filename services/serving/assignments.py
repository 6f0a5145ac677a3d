"""Fleet assignments: which model version each robot is told to run."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.errors import NotFound
from services.store import record_audit
from services.store.models import Robot, utcnow


def register_robots(
    *, session: Session, robot_ids: Sequence[str], tasks: Sequence[str], group: str = "default"
) -> list[Robot]:
    """Make robots known to Flywheel (idempotent); new robots start with no assignment."""
    robots = []
    for robot_id in robot_ids:
        robot = session.get(Robot, robot_id)
        if robot is None:
            robot = Robot(id=robot_id, group=group, tasks=list(tasks))
            session.add(robot)
            record_audit(
                session,
                actor="fleet",
                action="register-robot",
                subject_type="robot",
                subject_id=robot_id,
                after={"group": group, "tasks": list(tasks)},
            )
        robots.append(robot)
    return robots


def fleet(*, session: Session) -> list[Robot]:
    return list(session.scalars(select(Robot).order_by(Robot.id)))


def assignment_of(*, session: Session, robot_id: str) -> str | None:
    """The version a robot should run; marks the robot as seen (the robot asked)."""
    robot = session.get(Robot, robot_id)
    if robot is None:
        raise NotFound(f"unknown robot {robot_id!r}: register it first")
    robot.last_seen = utcnow()
    return robot.policy_version


def assign(
    *, session: Session, robot_ids: Sequence[str], version: str | None, actor: str, reason: str
) -> int:
    """Point robots at a version; returns how many changed. Each change is audited."""
    changed = 0
    for robot_id in robot_ids:
        robot = session.get(Robot, robot_id)
        if robot is None:
            raise NotFound(f"unknown robot {robot_id!r}")
        if robot.policy_version == version:
            continue
        record_audit(
            session,
            actor=actor,
            action="assign",
            subject_type="robot",
            subject_id=robot_id,
            before={"policy_version": robot.policy_version},
            after={"policy_version": version},
            reason=reason,
        )
        # The previous version stays acceptable in heartbeats for a grace period
        # (services/serving/heartbeats.py): the robot switches at its next look.
        robot.previous_version, robot.policy_version = robot.policy_version, version
        robot.assigned_at = utcnow()
        changed += 1
    return changed
