"""Rollouts as the fleet manager sees them: the champion, recent rollouts with their stages
and windows, and every robot's assignment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.registry.ledger import champion_of
from services.rollout.stages import Stage, current_stage, stages_of
from services.serving.assignments import fleet
from services.store.models import Rollout


def rollouts_overview(session: Session, *, limit: int = 20) -> dict[str, Any]:
    """The champion, recent rollouts with their stages and windows, and every robot's
    assignment: what the rollouts page, the API and `flywheel rollout status` show."""
    rollouts = [
        _rollout(r)
        for r in session.scalars(select(Rollout).order_by(Rollout.id.desc()).limit(limit))
    ]
    robots = [
        {
            "robot_id": r.id,
            "group": r.group,
            "model_version": r.policy_version,
            "last_seen": r.last_seen,
        }
        for r in fleet(session=session)
    ]
    return {"champion": champion_of(session=session), "rollouts": rollouts, "robots": robots}


def _rollout(r: Rollout) -> dict[str, Any]:
    stage = current_stage(r)
    return {
        "id": r.id,
        "candidate_id": r.candidate_id,
        "from_version": r.from_version,
        "to_version": r.to_version,
        "state": r.state,
        "current_stage": stage.name if stage else None,
        "reason": r.reason,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "stages": [_stage(s) for s in stages_of(r)],
    }


def _stage(s: Stage) -> dict[str, Any]:
    return {
        "name": s.name,
        "share": s.share,
        "robots": list(s.robots),
        "outcome": s.outcome,
        "episodes": s.episodes,
        "llr": dict(s.llr),
        "windows": [dict(w) for w in s.windows],
        "spec": s.plan.to_json(),
        "counts": dict(s.counts) if s.counts is not None else None,
    }
