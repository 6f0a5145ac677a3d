"""Robot credentials: enrollment, rotation, revocation, and checking who is calling.

An admin enrolls a robot and hands it a credential bound to its id; the robot sends it on
every request (``Authorization: Bearer fwr_...``). As with people's tokens, the credential
is shown once and only its SHA-256 is stored (``services/tokens.py``). Rotation issues a new
credential and the old one stops working at once; revocation leaves the robot with none
until it is enrolled again. Every change is audited.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.errors import NotFound
from services.serving.assignments import fleet
from services.serving.robots import provision_robots
from services.store import record_audit
from services.store.models import Robot, utcnow
from services.tokens import new_secret, secret_hash

# Robots' credentials look unlike people's tokens (``fw_``), so a leaked one is recognisable
# and one can never be mistaken for the other.
PREFIX = "fwr_"
# What the robot-facing API accepts in its paths.
ROBOT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RobotUnauthenticated(Exception):
    """No enrolled robot goes with this credential (missing, wrong or revoked)."""


class RobotForbidden(Exception):
    """A valid credential, but another robot's."""


class RobotAlreadyEnrolled(Exception):
    """The robot holds a working credential: rotate it instead."""


@dataclass(frozen=True)
class EnrolledRobot:
    id: str
    group: str
    tasks: tuple[str, ...]
    policy_version: str | None
    # Whether the robot holds a working credential.
    enrolled: bool
    credential_issued_at: datetime | None
    last_seen: datetime | None


def enroll_robot(
    *, session: Session, robot_id: str, tasks: Sequence[str], group: str, actor: str
) -> str:
    """Register a robot (it starts on the champion) and return its credential, shown once.

    A robot registered before, or whose credential was revoked, is enrolled afresh; one that
    holds a working credential is refused (rotating it is a separate, deliberate act).
    """
    if not ROBOT_ID.fullmatch(robot_id):
        raise ValueError(
            f"robot id {robot_id!r}: 1 to 64 letters, digits, '.', '_' or '-' (it is in URLs)"
        )
    robot = session.get(Robot, robot_id)
    if robot is not None and robot.credential_hash is not None:
        raise RobotAlreadyEnrolled(
            f"robot {robot_id!r} is already enrolled: `flywheel robots rotate {robot_id}` "
            "issues a new credential"
        )
    provision_robots(session=session, robot_ids=[robot_id], tasks=tasks, group=group)
    return _issue(session, robot_id, actor=actor, action="enroll-robot", reason=None)


def rotate_credential(*, session: Session, robot_id: str, actor: str) -> str:
    """Issue a new credential for an enrolled robot; the old one stops working now."""
    _robot(session, robot_id)
    return _issue(
        session,
        robot_id,
        actor=actor,
        action="rotate-robot-credential",
        reason="the previous credential no longer works",
    )


def revoke_credential(*, session: Session, robot_id: str, actor: str) -> None:
    """The robot's credential stops working; the robot is refused until enrolled again."""
    robot = _robot(session, robot_id)
    if robot.credential_hash is None:
        return  # nothing to revoke: not enrolled, or revoked already
    robot.credential_hash = None
    record_audit(
        session,
        actor=actor,
        action="revoke-robot-credential",
        subject_type="robot",
        subject_id=robot_id,
        reason="the robot is refused until enrolled again",
    )


def issue_fleet_credentials(
    *, session: Session, robot_ids: Sequence[str], tasks: Sequence[str], actor: str
) -> dict[str, str]:
    """Credentials for a whole fleet at once: enrolls new robots, rotates the others'.

    For a fleet that keeps no credentials between shifts (the simulated one): each shift
    starts with fresh ones, and those of the shift before stop working.
    """
    known = {r.id for r in fleet(session=session) if r.credential_hash is not None}
    return {
        robot_id: (
            rotate_credential(session=session, robot_id=robot_id, actor=actor)
            if robot_id in known
            else enroll_robot(
                session=session, robot_id=robot_id, tasks=tasks, group="default", actor=actor
            )
        )
        for robot_id in robot_ids
    }


def authenticate_robot(*, session: Session, robot_id: str, credential: str | None) -> Robot:
    """The robot ``robot_id``, if ``credential`` is its working credential.

    The one check every robot endpoint makes (a lockout of repeated failures wraps this).
    Raises RobotUnauthenticated for a missing, unknown or revoked credential and
    RobotForbidden for another robot's; says nothing about whether ``robot_id`` exists.
    """
    robot = robot_with_credential(session=session, credential=credential)
    if robot.id != robot_id:
        raise RobotForbidden(f"this credential is robot {robot.id!r}'s: it may not act as another")
    return robot


def robot_with_credential(*, session: Session, credential: str | None) -> Robot:
    """The robot whose working credential this is, for callers that name no robot (a policy
    server's client sends only its key). Raises RobotUnauthenticated as above."""
    if not credential:
        raise RobotUnauthenticated(
            "missing robot credential: send 'Authorization: Bearer fwr_...' "
            "(an admin enrolls the robot with `flywheel robots enroll ROBOT_ID`)"
        )
    robot = session.scalar(select(Robot).where(Robot.credential_hash == secret_hash(credential)))
    if robot is None:
        raise RobotUnauthenticated("invalid or revoked robot credential")
    return robot


def enrolled_robots(*, session: Session) -> list[EnrolledRobot]:
    return [
        EnrolledRobot(
            id=r.id,
            group=r.group,
            tasks=tuple(r.tasks),
            policy_version=r.policy_version,
            enrolled=r.credential_hash is not None,
            credential_issued_at=r.credential_issued_at,
            last_seen=r.last_seen,
        )
        for r in fleet(session=session)
    ]


def _robot(session: Session, robot_id: str) -> Robot:
    robot = session.get(Robot, robot_id)
    if robot is None:
        raise NotFound(
            f"unknown robot {robot_id!r}: an admin enrolls it with "
            f"`flywheel robots enroll {robot_id}`"
        )
    return robot


def _issue(session: Session, robot_id: str, *, actor: str, action: str, reason: str | None) -> str:
    credential = new_secret(PREFIX)
    robot = _robot(session, robot_id)
    robot.credential_hash = secret_hash(credential)
    robot.credential_issued_at = utcnow()
    record_audit(
        session,
        actor=actor,
        action=action,
        subject_type="robot",
        subject_id=robot_id,
        reason=reason,
    )
    return credential
