"""What the review pages show beyond the API's answers: the nights, the champion's history, a
candidate's learning curve, and the fleet episodes its dataset was built from.

Plain read functions, like ``review.py``; the pages turn them into plots.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.approval.decisions import find_candidate
from services.config import Settings
from services.episode_store.clips import episode_cameras
from services.episode_store.parquet import EpisodeStore
from services.evaluation.stats import wilson
from services.features import (
    ACTION,
    CONTROL_OPERATOR,
    CONTROL_SOURCE,
    EPISODE_ID,
    FRAME_INDEX,
    OBSERVATION_STATE,
)
from services.nights import night_summary
from services.store.models import (
    Candidate,
    DatasetEpisode,
    Episode,
    Evaluation,
    NightlyRun,
    Promotion,
)


def nights_history(settings: Settings, session: Session) -> list[dict[str, Any]]:
    """Every night, oldest first: the row of the nightly table, with when it ran."""
    rows = session.execute(
        select(NightlyRun.id, NightlyRun.started_at, NightlyRun.state).order_by(NightlyRun.id)
    ).all()
    nights = []
    for night_id, started_at, state in rows:
        night = {**night_summary(settings, night_id), "started_at": started_at, "state": state}
        if night.get("candidate"):
            night["evaluation"] = evaluation_success(session, night["candidate"]["id"])
        nights.append(night)
    return nights


def champion_history(session: Session) -> list[dict[str, Any]]:
    """Every change of champion, oldest first: promotions and rollbacks."""
    return [
        {
            "generation": p.generation,
            "at": p.at,
            "from_version": p.from_version,
            "to_version": p.to_version,
            "kind": p.kind,
            "actor": p.actor,
            "reason": p.reason,
            "candidate_id": p.candidate_id,
        }
        for p in session.scalars(select(Promotion).order_by(Promotion.generation))
    ]


def learning_curve(session: Session, ref: str) -> list[dict[str, Any]]:
    """Closed-loop success of each night's candidate, up to and including this candidate,
    with the champion it was paired against: how the policy improved night by night.

    A candidate trained outside a night (by hand) is the curve's last point."""
    candidate = find_candidate(session, ref)
    nights = session.execute(
        select(NightlyRun.id, NightlyRun.candidate_id)
        .where(NightlyRun.candidate_id.is_not(None))
        .order_by(NightlyRun.id)
    ).all()
    points: list[tuple[int | None, str]] = []
    for night_id, candidate_id in nights:
        if candidate_id not in {c for _, c in points}:
            points.append((night_id, candidate_id))
        if candidate_id == candidate.id:
            break
    else:
        points.append((None, candidate.id))
    curve = []
    for night_id, candidate_id in points:
        row = evaluation_success(session, candidate_id)
        if row is not None:
            curve.append({"night": night_id, **row})
    return curve


def evaluation_success(session: Session, candidate_id: str) -> dict[str, Any] | None:
    """A candidate's closed-loop success over all its tasks, and its champion's on the same
    seeds, with 95% Wilson intervals; None before it is evaluated."""
    evaluations = session.scalars(
        select(Evaluation).where(Evaluation.candidate_id == candidate_id)
    ).all()
    if not evaluations:
        return None
    version = session.scalar(select(Candidate.model_version).where(Candidate.id == candidate_id))
    n = sum(e.n for e in evaluations)
    k = sum(e.candidate_successes for e in evaluations)
    paired = [e.champion_successes for e in evaluations if e.champion_successes is not None]
    rate = wilson(k, n)
    champion = wilson(sum(paired), n) if len(paired) == len(evaluations) else None
    return {
        "candidate_id": candidate_id,
        "model_version": version,
        "champion_version": evaluations[0].champion_version,
        "n": n,
        "rate": rate.value,
        "ci": [rate.low, rate.high],
        "champion_rate": champion.value if champion else None,
        "champion_ci": [champion.low, champion.high] if champion else None,
    }


def dataset_fleet_episodes(
    settings: Settings, session: Session, dataset_id: str, *, limit: int = 4
) -> list[dict[str, Any]]:
    """Fleet episodes a dataset was built from where the robot failed or the operator took
    over, with every step's state, action and who had control (from the episode store)."""
    rows = session.scalars(
        select(Episode)
        .join(DatasetEpisode, DatasetEpisode.episode_id == Episode.id)
        .where(
            DatasetEpisode.dataset_id == dataset_id,
            Episode.kind == "deployment",
            Episode.status == "ok",
            (Episode.n_interventions > 0) | (Episode.outcome != "success"),
        )
        .order_by(Episode.n_interventions.desc(), Episode.id)
        .limit(limit)
    ).all()
    kept = [e for e in rows if e.data_file]
    if not kept:
        return []
    frames = EpisodeStore(settings.episode_store).read_frames(
        [e.id for e in kept], data_files={e.id: e.data_file for e in kept}
    )
    episodes = []
    for e in kept:
        steps = frames[frames[EPISODE_ID] == e.id].sort_values(FRAME_INDEX)
        operator = (steps[CONTROL_SOURCE] == CONTROL_OPERATOR).to_numpy()
        episodes.append(
            {
                "id": e.id,
                "robot_id": e.robot_id,
                "task": e.task,
                "policy_version": e.policy_version,
                "outcome": e.outcome,
                "interventions": e.n_interventions,
                "states": np.stack(steps[OBSERVATION_STATE].to_numpy()).tolist(),
                "actions": np.stack(steps[ACTION].to_numpy()).tolist(),
                "operator_spans": operator_spans(operator),
                "steps": len(steps),
                "cameras": episode_cameras(settings.episode_store, e.data_file, e.id, len(steps)),
            }
        )
    return episodes


def operator_spans(operator: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) step ranges where the operator had control."""
    edges = np.flatnonzero(np.diff(np.r_[0, operator.astype(np.int8), 0]))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
