"""The figures /metrics reports, read from the store at scrape time; the Prometheus
collector (``services/api/metrics.py``) only turns them into metric families."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.rollout.controller import in_progress
from services.rollout.stages import current_stage
from services.store.models import Candidate, Episode, Evaluation, Heartbeat, NightlyRun, Rollout


@dataclass(frozen=True)
class EpisodeCount:
    """Episodes in the store by validation status and kind, with their interventions and
    robot time."""

    status: str
    kind: str | None
    episodes: int
    interventions: int
    seconds: float


@dataclass(frozen=True)
class Training:
    trained: int  # candidates with a recorded training time
    seconds: float  # their training time, summed
    newest_version: str | None  # the newest trained candidate's model version
    newest_seconds: float | None  # and its training time; None when nothing was trained


@dataclass(frozen=True)
class TaskSuccess:
    side: str  # candidate | champion
    model_version: str
    task: str
    ratio: float


@dataclass(frozen=True)
class RolloutStage:
    """Where the rollout in progress stands."""

    rollout_id: int
    to_version: str
    stage: str
    number: int  # 1 = the first stage
    share: float  # of the fleet on the candidate


@dataclass(frozen=True)
class HeartbeatSums:
    """What the robots reported on one policy version (None: no policy)."""

    policy_version: str | None
    episodes: int
    failures: int
    interventions: int
    active_seconds: float


def episode_counts(session: Session) -> list[EpisodeCount]:
    rows = session.execute(
        select(
            Episode.status,
            Episode.kind,
            func.count(),
            func.coalesce(func.sum(Episode.n_interventions), 0),
            func.coalesce(func.sum(Episode.duration_s), 0.0),
        ).group_by(Episode.status, Episode.kind)
    ).all()
    return [EpisodeCount(*row) for row in rows]


def training(session: Session) -> Training:
    count, seconds = session.execute(
        select(func.count(), func.coalesce(func.sum(Candidate.train_seconds), 0.0)).where(
            Candidate.train_seconds.is_not(None)
        )
    ).one()
    newest = session.execute(
        select(Candidate.model_version, Candidate.train_seconds)
        .where(Candidate.train_seconds.is_not(None))
        .order_by(Candidate.created_at.desc(), Candidate.id.desc())
        .limit(1)
    ).first()
    if newest is None:
        return Training(count, seconds, None, None)
    return Training(count, seconds, newest.model_version, newest.train_seconds)


def newest_evaluation(session: Session) -> list[TaskSuccess]:
    """The newest evaluated candidate's closed-loop success per task, and its champion's on
    the same seeds."""
    newest = session.scalar(
        select(Evaluation.candidate_id).order_by(Evaluation.created_at.desc(), Evaluation.id.desc())
    )
    if newest is None:
        return []
    version = session.scalar(select(Candidate.model_version).where(Candidate.id == newest))
    rows = []
    for e in session.scalars(select(Evaluation).where(Evaluation.candidate_id == newest)):
        rows.append(TaskSuccess("candidate", version or "", e.task, e.candidate_successes / e.n))
        if e.champion_successes is not None and e.champion_version is not None:
            rows.append(
                TaskSuccess("champion", e.champion_version, e.task, e.champion_successes / e.n)
            )
    return rows


def rollouts_by_state(session: Session) -> list[tuple[str, int]]:
    return [
        (state, count)
        for state, count in session.execute(
            select(Rollout.state, func.count()).group_by(Rollout.state)
        )
    ]


def rollout_in_progress(session: Session) -> RolloutStage | None:
    rollout = in_progress(session)
    stage = current_stage(rollout) if rollout is not None else None
    if stage is None:
        return None
    return RolloutStage(
        rollout.id, rollout.to_version, stage.name, rollout.current_stage + 1, stage.share
    )


def heartbeat_sums(session: Session) -> list[HeartbeatSums]:
    """What the robots report live, per policy version: what a rollout is judged on."""
    columns = (
        Heartbeat.episodes,
        Heartbeat.failures,
        Heartbeat.interventions,
        Heartbeat.active_seconds,
    )
    rows = session.execute(
        select(
            Heartbeat.policy_version, *(func.coalesce(func.sum(c), 0) for c in columns)
        ).group_by(Heartbeat.policy_version)
    ).all()
    return [HeartbeatSums(*row) for row in rows]


def nights_by_state(session: Session) -> list[tuple[str, int]]:
    return [
        (state, count)
        for state, count in session.execute(
            select(NightlyRun.state, func.count()).group_by(NightlyRun.state)
        )
    ]


def newest_ingest_run(session: Session) -> str | None:
    """The ingest run of the newest night that ingested."""
    return session.scalar(
        select(NightlyRun.ingest_run_id)
        .where(NightlyRun.ingest_run_id.is_not(None))
        .order_by(NightlyRun.id.desc())
        .limit(1)
    )
