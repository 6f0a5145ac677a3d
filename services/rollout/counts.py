"""What the heartbeats claim, checked against the episodes ingested from the same robots.

The controller decides on heartbeat counts, which arrive live; the robots' logs arrive later,
when an ingest run picks them up. Before a stage advances, the candidate's robots' counts
are checked against the episode table, robot by robot:

- reported: the episodes, failures and interventions the robot's heartbeats claimed while
  it ran the candidate, up to the start of the newest finished ingest run. A robot uploads
  an episode's log before the heartbeat that counts it (the simulated fleet does), so every
  episode reported before that run started should be in the episode table by now;
- ingested: the episodes in the table from that robot and the candidate's version (a
  candidate version runs only in its own rollout, so no time window is needed) that finished
  ingest runs stored, quarantined ones included: they arrived, even if they failed
  validation.

A robot whose counts differ by more than ``count_tolerance`` of what it reported, or
``count_slack`` episodes, whichever is more (uploads racing the ingest run), is a mismatch:
the rollout pauses for a fleet manager instead of advancing, and the audit log says which
robot claimed what. Before any ingest run has covered the stage's heartbeats there is
nothing to check yet; the check says so and does not hold the stage (the demo's canary
advances within one shift, before its night's ingest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from services.store.models import Episode, Heartbeat, IngestRun

KEYS = ("episodes", "failures", "interventions")


def check_counts(
    session: Session,
    *,
    version: str,
    robots: Sequence[str],
    tolerance: float,
    slack: int,
) -> dict[str, Any]:
    """``{"checked_until", "robots": {robot: {"reported", "ingested"}}, "mismatched"}``."""
    cut = session.scalar(
        select(func.max(IngestRun.started_at)).where(IngestRun.finished_at.is_not(None))
    )
    if cut is None:
        return {"checked_until": None, "robots": {}, "mismatched": []}
    finished = select(IngestRun.id).where(IngestRun.finished_at.is_not(None))
    reported = _per_robot(
        session.execute(
            select(
                Heartbeat.robot_id,
                func.sum(Heartbeat.episodes),
                func.sum(Heartbeat.failures),
                func.sum(Heartbeat.interventions),
            )
            .where(
                Heartbeat.policy_version == version,
                Heartbeat.robot_id.in_(robots),
                Heartbeat.at <= cut,
            )
            .group_by(Heartbeat.robot_id)
        )
    )
    # A failure, as the heartbeat counts it: not completed by the robot on its own.
    failed = case((Episode.outcome != "success", 1), (Episode.n_interventions > 0, 1), else_=0)
    ingested = _per_robot(
        session.execute(
            select(
                Episode.robot_id,
                func.count(Episode.id),
                func.sum(failed),
                func.sum(Episode.n_interventions),
            )
            .where(
                Episode.policy_version == version,
                Episode.robot_id.in_(robots),
                # not those of a run still going (the night's, while the watcher looks):
                # their heartbeats may be newer than the cut
                or_(Episode.ingest_run_id.is_(None), Episode.ingest_run_id.in_(finished)),
            )
            .group_by(Episode.robot_id)
        )
    )
    per_robot, mismatched = {}, []
    for robot in sorted(set(reported) | set(ingested)):
        claim = reported.get(robot, dict.fromkeys(KEYS, 0))
        found = ingested.get(robot, dict.fromkeys(KEYS, 0))
        per_robot[robot] = {"reported": claim, "ingested": found}
        if any(abs(claim[k] - found[k]) > max(slack, tolerance * claim[k]) for k in KEYS):
            mismatched.append(robot)
    return {"checked_until": cut.isoformat(), "robots": per_robot, "mismatched": mismatched}


def mismatch_reason(check: dict[str, Any]) -> str:
    parts = []
    for robot in check["mismatched"]:
        claim, found = check["robots"][robot]["reported"], check["robots"][robot]["ingested"]
        parts.append(
            f"{robot} reported {claim['episodes']} episodes ({claim['failures']} failures, "
            f"{claim['interventions']} interventions), {found['episodes']} ingested "
            f"({found['failures']}, {found['interventions']})"
        )
    return "heartbeat counts do not match the ingested episodes: " + "; ".join(parts)


def _per_robot(rows) -> dict[str, dict[str, int]]:
    return {
        robot: dict(zip(KEYS, (int(v or 0) for v in values), strict=True))
        for robot, *values in rows
    }
