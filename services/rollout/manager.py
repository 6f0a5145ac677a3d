"""What a fleet manager does with a paused rollout: resume it with more room, advance it by
hand, or halt it (``controller.halt_rollout``). Each is audited with its reason.

A rollout pauses when a stage reaches its cap with no decision, at a stage declared with a
manual gate, or when heartbeat counts do not match the ingested episodes (``rule.py``,
``counts.py``); the controller does nothing more with it until one of these.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.orm import Session

from services.config import Settings
from services.registry.ledger import lock_champion
from services.rollout.champion import reconcile_champion
from services.rollout.controller import RolloutError
from services.rollout.stages import stages_of, store_stages
from services.rollout.transitions import enter_stage, in_progress
from services.store import record_audit, session_scope
from services.store.models import Rollout


def resume_rollout(
    settings: Settings,
    *,
    actor: str,
    reason: str,
    episodes: int | None = None,
    hours: float | None = None,
) -> Rollout:
    """Let the paused rollout's stage go on: its caps grow by ``episodes`` and ``hours``
    (default: as much again as the stage's spec allowed), and a count mismatch that paused
    it no longer holds it."""
    _require_reason(reason)
    if (episodes is not None and episodes < 1) or (hours is not None and hours <= 0):
        raise ValueError("a resume extends the stage by at least one episode or some hours")
    with session_scope(settings.db_url, write=True) as session:
        rollout = _paused(session)
        stages = stages_of(rollout)
        stage = stages[rollout.current_stage]
        spec = stage.plan
        extended = replace(
            spec,
            max_episodes=None
            if spec.max_episodes is None
            else max(spec.max_episodes, stage.episodes) + (episodes or spec.max_episodes),
            max_hours=None
            if spec.max_hours is None
            else spec.max_hours + (hours or spec.max_hours),
        )
        stages[rollout.current_stage] = stage.with_(spec=extended, counts_accepted=True)
        store_stages(rollout, stages)
        before = {"state": "paused", "stage": stage.name, "reason": rollout.reason}
        rollout.state, rollout.reason = "in_progress", reason
        record_audit(
            session,
            actor=actor,
            action="resume-rollout",
            subject_type="rollout",
            subject_id=str(rollout.id),
            before=before,
            after={
                "state": "in_progress",
                "max_episodes": extended.max_episodes,
                "max_hours": extended.max_hours,
            },
            reason=reason,
        )
    return rollout


def advance_rollout(settings: Settings, *, actor: str, reason: str) -> Rollout:
    """Move the paused rollout to its next stage by hand (the last one promotes)."""
    _require_reason(reason)
    with session_scope(settings.db_url, write=True) as session:
        lock_champion(session=session)
        rollout = _paused(session)
        stages = stages_of(rollout)
        stage = stages[rollout.current_stage]
        stages[rollout.current_stage] = stage.with_(outcome="advanced")
        store_stages(rollout, stages)
        record_audit(
            session,
            actor=actor,
            action="advance-rollout",
            subject_type="rollout",
            subject_id=str(rollout.id),
            before={"state": "paused", "stage": stage.name, "reason": rollout.reason},
            after={"stage": stages[rollout.current_stage + 1].name},
            reason=reason,
        )
        rollout.reason = reason
        enter_stage(session, rollout, rollout.current_stage + 1, actor=actor)
    reconcile_champion(settings)
    return rollout


def _paused(session: Session) -> Rollout:
    rollout = in_progress(session)
    if rollout is None or rollout.state != "paused":
        raise RolloutError(
            "no rollout is paused: nothing to resume or advance, nothing changed"
            if rollout is None
            else f"rollout {rollout.id} is in progress, not paused: the controller decides it"
        )
    return rollout


def _require_reason(reason: str) -> None:
    if not reason or not reason.strip():
        raise ValueError("this needs a reason")
