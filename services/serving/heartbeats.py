"""A robot's heartbeat, checked before it counts.

The rollout controller decides on what heartbeats report, so a report is counted once and
only if it could be true (docs/security.md, "Robot credentials"):

- **Once.** The robot picks an id for each heartbeat (a UUID) and sends the same id when it
  retries. A heartbeat whose id was seen before is not counted again; the same id with other
  counts is refused as a conflict.
- **For its own version.** A robot reports for the version it is assigned, or for the one
  before it during ``fleet_version_grace_s`` after the change: it switches between
  heartbeats, so the first report after a change still covers the old version's episodes.
- **Plausible counts.** No more episodes than the active seconds allow at
  ``fleet_min_episode_seconds`` each; no more than ``fleet_max_interventions_per_episode``
  interventions per episode (an intervention is reported with the episode it happened in);
  no more active seconds than the wall time since the robot's previous heartbeat (or its
  enrollment) plus ``fleet_heartbeat_slack_s``.

Who is calling is checked before any of this (``services/serving/credentials.py``).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.config import Settings
from services.serving.robots import record_heartbeat
from services.store.models import Heartbeat, Robot, utcnow


class HeartbeatConflict(Exception):
    """A heartbeat for a version the robot does not run, or a reused id with other counts."""


class ImplausibleHeartbeat(ValueError):
    """Counts that cannot be true for the time reported."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class HeartbeatReport:
    policy_version: str | None
    episodes: int
    failures: int
    interventions: int
    active_seconds: float
    safety_events: int = 0
    emergency_stop: bool = False


def accept_heartbeat(
    *,
    session: Session,
    settings: Settings,
    robot: Robot,
    heartbeat_id: str,
    report: HeartbeatReport,
) -> Heartbeat | None:
    """Count ``report`` from an authenticated ``robot``: the stored heartbeat, or None for a
    retry that was counted before."""
    earlier, previous_at = _earlier_and_latest(session, robot.id, heartbeat_id)
    if earlier is not None:
        _same_as(session.get_one(Heartbeat, earlier), heartbeat_id, report)
        return None
    now = utcnow()
    _check_version(robot, report.policy_version, settings, now)
    _check_plausible(robot, report, settings, now, previous_at)
    heartbeat = record_heartbeat(
        session=session, robot_id=robot.id, heartbeat_id=heartbeat_id, **vars(report)
    )
    if heartbeat is None:  # a concurrent retry with the same id got there first
        _same_as(_earlier(session, robot.id, heartbeat_id), heartbeat_id, report)
    return heartbeat


def _earlier_and_latest(
    session: Session, robot_id: str, heartbeat_id: str
) -> tuple[int | None, datetime | None]:
    """The row id of the robot's heartbeat ``heartbeat_id`` if one is stored, and the time of
    its latest heartbeat: both are read for every heartbeat, so in one round trip."""
    mine = Heartbeat.robot_id == robot_id
    earlier = select(Heartbeat.id).where(mine, Heartbeat.heartbeat_id == heartbeat_id)
    latest = select(func.max(Heartbeat.at)).where(mine)
    return tuple(session.execute(select(earlier.scalar_subquery(), latest.scalar_subquery())).one())


def _earlier(session: Session, robot_id: str, heartbeat_id: str) -> Heartbeat:
    return session.scalars(
        select(Heartbeat).where(
            Heartbeat.robot_id == robot_id, Heartbeat.heartbeat_id == heartbeat_id
        )
    ).one()


def _same_as(earlier: Heartbeat, heartbeat_id: str, report: HeartbeatReport) -> None:
    stored = HeartbeatReport(
        policy_version=earlier.policy_version,
        episodes=earlier.episodes,
        failures=earlier.failures,
        interventions=earlier.interventions,
        active_seconds=earlier.active_seconds,
        safety_events=earlier.safety_events,
        emergency_stop=earlier.emergency_stop,
    )
    if astuple(stored) != astuple(report):
        raise HeartbeatConflict(
            f"heartbeat {heartbeat_id} was already reported with other counts: "
            "a new report needs a new heartbeat_id"
        )


def _check_version(robot: Robot, version: str | None, settings: Settings, now: datetime) -> None:
    if version == robot.policy_version:
        return
    grace = timedelta(seconds=settings.fleet.fleet_version_grace_s)
    switching = robot.assigned_at is not None and now - robot.assigned_at <= grace
    if switching and version == robot.previous_version:
        return
    allowed = f"version {robot.policy_version}"
    if switching:
        until = robot.assigned_at + grace
        allowed += f" (or {robot.previous_version}, its previous one, until {until:%H:%M:%S} UTC)"
    raise HeartbeatConflict(
        f"robot {robot.id!r} reported for version {version}, but it is assigned {allowed}: "
        "ask for the assignment and report for what you run"
    )


def _check_plausible(
    robot: Robot,
    report: HeartbeatReport,
    settings: Settings,
    now: datetime,
    previous_at: datetime | None,
) -> None:
    fleet = settings.fleet
    shortest = fleet.fleet_min_episode_seconds
    if report.episodes * shortest > report.active_seconds + 1e-9:
        raise ImplausibleHeartbeat(
            "active_seconds",
            f"{report.episodes} episodes in {report.active_seconds:g} s of active time: an "
            f"episode takes at least {shortest:g} s (FLYWHEEL_FLEET_MIN_EPISODE_SECONDS)",
        )
    most = fleet.fleet_max_interventions_per_episode
    if report.interventions > report.episodes * most:
        raise ImplausibleHeartbeat(
            "interventions",
            f"{report.interventions} interventions in {report.episodes} episodes: at most "
            f"{most} per episode (FLYWHEEL_FLEET_MAX_INTERVENTIONS_PER_EPISODE), each reported "
            "with the episode it happened in",
        )
    since = previous_at or robot.credential_issued_at or robot.created_at
    wall = (now - since).total_seconds()
    if report.active_seconds > wall + fleet.fleet_heartbeat_slack_s:
        raise ImplausibleHeartbeat(
            "active_seconds",
            f"{report.active_seconds:g} s of active time, but only {wall:.0f} s have passed "
            f"since robot {robot.id!r}'s previous heartbeat (slack "
            f"{fleet.fleet_heartbeat_slack_s:g} s, FLYWHEEL_FLEET_HEARTBEAT_SLACK_S)",
        )
