"""The nights ledger: what each nightly run produced, and the fleet's figures for that night."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from services.config import Settings
from services.registry.ledger import champion_of, lock_champion
from services.store import session_scope
from services.store.models import (
    Candidate,
    Decision,
    Episode,
    Evaluation,
    NightlyRun,
    Rollout,
    utcnow,
)

# What a run taking over from a dead one carries on with: the night is the same night.
CARRIED = ("ingest_run_id", "champion_before", "dataset_id", "candidate_id")


class NightInProgress(RuntimeError):
    """Another nightly run of this fleet is running: one at a time."""


def open_night(settings: Settings, *, flow_run_id: str | None) -> int:
    """Open tonight's run, unless one is already running (one nightly run per fleet).

    Triggers that arrive together queue on one lock (the champion row: PostgreSQL's row
    lock, SQLite's write lock); the first opens the night, the others see it running and
    raise NightInProgress. A running night whose process is gone (same host) or whose lease
    ran out is marked abandoned and the new run takes over; every stage's output is keyed
    by content, so it resumes where the dead one stopped. The new run carries on the dead
    one's night (``CARRIED``): its ingest run, champion before, dataset and candidate, so that
    the night's report counts what the dead run did.
    """

    with session_scope(settings.db_url, write=True) as session:
        champion = lock_champion(session=session)
        carried: dict[str, Any] = {"champion_before": champion}
        running_nights = select(NightlyRun).where(NightlyRun.state == "running")
        for running in session.scalars(running_nights.order_by(NightlyRun.id)):
            if _alive(running):
                started = f"{running.started_at:%Y-%m-%d %H:%M}"
                raise NightInProgress(
                    f"night {running.id} is in progress (flow run {running.flow_run_id}, "
                    f"{running.host} pid {running.pid}, started {started} UTC): "
                    "one nightly run at a time"
                )
            carried = {key: getattr(running, key) for key in CARRIED}
            carried["summary"] = {k: v for k, v in running.summary.items() if k != "outcome"}
            running.state = "abandoned"
            running.finished_at = utcnow()
            running.summary = {
                **running.summary,
                "outcome": "abandoned: its process is gone; a later run took over",
            }
        night = NightlyRun(
            **carried,
            flow_run_id=flow_run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            lease_until=utcnow() + timedelta(seconds=settings.night.night_lease_s),
        )
        session.add(night)
        session.flush()
        return night.id


def _alive(night: NightlyRun) -> bool:
    if night.lease_until is not None and night.lease_until < utcnow():
        return False
    if night.host == socket.gethostname() and night.pid is not None:
        try:
            os.kill(night.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's live process
            return True
    return True


def update_night(settings: Settings, night_id: int, **fields: Any) -> None:
    """Record a stage's output and renew the night's lease."""
    with session_scope(settings.db_url) as session:
        night = session.get(NightlyRun, night_id)
        night.lease_until = utcnow() + timedelta(seconds=settings.night.night_lease_s)
        for key, value in fields.items():
            if key == "summary":
                value = {**night.summary, **value}
            setattr(night, key, value)
        if fields.get("state") in ("completed", "failed"):
            night.finished_at = utcnow()


def fail_night(settings: Settings, *, flow_run_id: str, error: str) -> None:
    """Mark the night a crashed flow run opened as failed; its stages' outputs stay stored."""
    with session_scope(settings.db_url) as session:
        night = session.scalar(select(NightlyRun).where(NightlyRun.flow_run_id == flow_run_id))
        if night is not None and night.state == "running":
            night.state = "failed"
            night.finished_at = utcnow()
            night.summary = {**night.summary, "outcome": f"failed: {error}"}


def started_at(settings: Settings, night_id: int) -> datetime:
    with session_scope(settings.db_url) as session:
        return session.get(NightlyRun, night_id).started_at


def nights_completed(settings: Settings) -> int:
    with session_scope(settings.db_url) as session:
        return session.scalar(
            select(func.count()).select_from(NightlyRun).where(NightlyRun.state == "completed")
        )


def fleet_figures(settings: Settings, ingest_run_id: str | None) -> dict[str, Any]:
    """How the fleet did in the episodes one ingest run brought in (deployments only).

    Autonomous success: the episode succeeded with no operator takeover.
    """
    if ingest_run_id is None:
        return {"episodes": 0}
    with session_scope(settings.db_url) as session:
        rows = session.execute(
            select(Episode.outcome, Episode.n_interventions, Episode.duration_s).where(
                Episode.ingest_run_id == ingest_run_id,
                Episode.status == "ok",
                Episode.kind == "deployment",
            )
        ).all()
    n = len(rows)
    if n == 0:
        return {"episodes": 0}
    interventions = sum(r.n_interventions for r in rows)
    hours = sum(r.duration_s or 0.0 for r in rows) / 3600
    return {
        "episodes": n,
        "autonomous_success": sum(r.outcome == "success" and r.n_interventions == 0 for r in rows)
        / n,
        "success": sum(r.outcome == "success" for r in rows) / n,
        "interventions_per_episode": interventions / n,
        "interventions_per_robot_hour": interventions / hours if hours else None,
    }


def ingest_run_of(settings: Settings, night_id: int) -> str | None:
    """The ingest run the night has (carried on from a dead run), for ingest to continue."""
    with session_scope(settings.db_url) as session:
        return session.get(NightlyRun, night_id).ingest_run_id


def rolled_out_candidate(settings: Settings, night_id: int, dataset_id: str) -> str | None:
    """The night's candidate, if a dead run of the night trained it on this dataset and
    started its rollout: it may be champion already, so the night goes on with it instead
    of stopping for want of new episodes or fine-tuning it on its own data."""

    with session_scope(settings.db_url) as session:
        return session.scalar(
            select(Candidate.id)
            .join(NightlyRun, NightlyRun.candidate_id == Candidate.id)
            .join(Rollout, Rollout.candidate_id == Candidate.id)
            .where(NightlyRun.id == night_id, Candidate.dataset_id == dataset_id)
        )


def champion_dataset(settings: Settings) -> str | None:
    """The dataset the current champion was trained on (None before the first champion)."""

    with session_scope(settings.db_url) as session:
        champion = champion_of(session=session)
        if champion is None:
            return None
        return session.scalar(
            select(Candidate.dataset_id).where(Candidate.model_version == champion)
        )


def night_summary(settings: Settings, night_id: int) -> dict[str, Any]:
    """The row of the nightly table: fleet figures, candidate against champion, verdict."""

    with session_scope(settings.db_url) as session:
        night = session.get(NightlyRun, night_id)
        summary: dict[str, Any] = {
            "night": night_id,
            "champion_before": night.champion_before,
            "champion_after": champion_of(session=session),
            "fleet": fleet_figures(settings, night.ingest_run_id),
            **night.summary,
        }
        if night.candidate_id:
            candidate = session.get(Candidate, night.candidate_id)
            evaluations = session.scalars(
                select(Evaluation).where(Evaluation.candidate_id == candidate.id)
            ).all()
            n = sum(e.n for e in evaluations)
            gate = session.scalar(
                select(Decision).where(
                    Decision.candidate_id == candidate.id, Decision.kind == "gate"
                )
            )
            summary["candidate"] = {
                "id": candidate.id,
                "version": candidate.model_version,
                "parent": candidate.parent_version,
                "status": candidate.status,
                "train_seconds": candidate.train_seconds,
                "successes": sum(e.candidate_successes for e in evaluations),
                "champion_successes": sum(e.champion_successes or 0 for e in evaluations)
                if candidate.parent_version
                else None,
                "n": n,
                "verdict": gate.verdict if gate else None,
                "gate_reason": gate.reason if gate else None,
            }
    return summary


def rollout_outcomes(settings: Settings) -> dict[str, str]:
    """Per candidate with a rollout: how it ended, or where it stands."""

    outcomes = {}
    with session_scope(settings.db_url) as session:
        for r in session.scalars(select(Rollout).order_by(Rollout.id)):
            stage = r.stages[r.current_stage]["name"] if r.stages else "-"
            outcomes[r.candidate_id] = {
                "completed": "champion",
                "in_progress": f"at {stage}",
                "rolled_back": f"rolled back at {stage}",
                "halted": f"halted at {stage}",
                "paused": f"paused at {stage} for a fleet manager",
            }.get(r.state, r.state)
    return outcomes


def rollout_under_way(settings: Settings) -> str | None:
    """Which rollout is still under way (in progress or paused), in words; None if none.

    A rollout lasts as long as its tests need, often past the next night: tonight's approved
    candidate then waits, and a later night's late approvals start it (or supersede it).
    """
    with session_scope(settings.db_url) as session:
        r = session.scalar(select(Rollout).where(Rollout.state.in_(("in_progress", "paused"))))
        if r is None:
            return None
        stage = r.stages[r.current_stage]["name"] if r.stages else "-"
        return f"rollout {r.id} of model {r.to_version} is {r.state.replace('_', ' ')} at {stage}"
