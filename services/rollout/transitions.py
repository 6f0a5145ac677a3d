"""A rollout's transitions, each inside the caller's transaction: enter a stage, pause, and
return the candidate's robots to the champion. Every one is audited; the ``action`` names
are what notifications and the audit log key on: ``rollout-stage`` (a stage entered, the
last one a promotion), ``pause-rollout``, ``count-mismatch``, ``rollback`` (the controller's
tests), ``halt-rollout`` (a fleet manager or a guardrail), ``resume-rollout`` and
``advance-rollout`` (a fleet manager, ``manager.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.registry.ledger import champion_of, promote
from services.rollout.rule import carry
from services.rollout.stages import stages_of, store_stages
from services.serving.assignments import assign, fleet
from services.store import record_audit
from services.store.models import Candidate, Heartbeat, Rollout, utcnow


def in_progress(session: Session) -> Rollout | None:
    """The rollout under way: in progress, or paused for a fleet manager (at most one)."""
    return session.scalar(select(Rollout).where(Rollout.state.in_(("in_progress", "paused"))))


def enter_stage(session: Session, rollout: Rollout, index: int, *, actor: str) -> None:
    """Move the rollout to stage ``index``, carrying the evidence of the stage before; the
    last stage promotes the candidate."""
    stages = stages_of(rollout)
    newest = session.scalar(select(func.max(Heartbeat.id))) or 0
    before = {"stage": stages[rollout.current_stage].name if index else None}
    stage = stages[index].with_(started_at=utcnow().isoformat(), cursor=newest)
    if index:
        stage = carry(stages[index - 1], stage)
    rollout.current_stage = index
    rollout.state = "in_progress"
    status = None
    if stage.is_last:
        promote(
            session=session,
            expected=rollout.from_version,
            new=rollout.to_version,
            candidate_id=rollout.candidate_id,
            actor=actor,
            reason=f"rollout {rollout.id} reached the whole fleet",
        )
        stage = stage.with_(robots=tuple(r.id for r in fleet(session=session)), outcome="completed")
        rollout.state = "completed"
        rollout.finished_at = utcnow()
        status = "deployed"
    stages[index] = stage
    store_stages(rollout, stages)
    move_robots(
        session,
        rollout,
        robots=stage.robots,
        version=rollout.to_version,
        candidate_status=status,
        actor=actor,
        assign_reason=f"rollout {rollout.id}, {stage.name} stage",
        action="rollout-stage",
        before=before,
        after={
            "stage": stage.name,
            "robots": len(stage.robots),
            "champion": champion_of(session=session),
        },
        reason="champion on the whole fleet"
        if stage.is_last
        else f"{len(stage.robots)} robot(s) on {rollout.to_version}, the rest on the champion",
    )


def pause(session: Session, rollout: Rollout, *, actor: str, reason: str, cause: str) -> None:
    """Hold the rollout where it is for a fleet manager; the robots keep what they run."""
    stage = stages_of(rollout)[rollout.current_stage]
    rollout.state = "paused"
    rollout.reason = reason
    record_audit(
        session,
        actor=actor,
        action="pause-rollout",
        subject_type="rollout",
        subject_id=str(rollout.id),
        before={"state": "in_progress", "stage": stage.name},
        after={"state": "paused", "stage": stage.name, "cause": cause},
        reason=reason,
    )


def return_to_champion(
    session: Session, rollout: Rollout, state: str, *, actor: str, reason: str, action: str
) -> None:
    """End the rollout as ``state`` (rolled_back, halted): every robot on the candidate goes
    back to the champion, and the candidate is marked rolled back."""
    stages = stages_of(rollout)
    stage = stages[rollout.current_stage]
    stages[rollout.current_stage] = stage.with_(outcome=state)
    store_stages(rollout, stages)
    robots = [r.id for r in fleet(session=session) if r.policy_version == rollout.to_version]
    before = {"state": rollout.state, "stage": stage.name}
    rollout.state = state
    rollout.reason = reason
    rollout.finished_at = utcnow()
    move_robots(
        session,
        rollout,
        robots=robots,
        version=rollout.from_version,
        candidate_status="rolled_back",
        actor=actor,
        assign_reason=f"rollout {rollout.id} {state.replace('_', ' ')}: {reason}",
        action=action,
        before=before,
        after={"state": state, "robots_returned": len(robots), "champion": rollout.from_version},
        reason=reason,
    )


def move_robots(
    session: Session,
    rollout: Rollout,
    *,
    robots: Sequence[str],
    version: str | None,
    candidate_status: str | None,
    actor: str,
    assign_reason: str,
    action: str,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str,
) -> None:
    """How every transition ends: point the robots at a version (each change audited), set
    the candidate's status, and audit the rollout's transition."""
    assign(session=session, robot_ids=robots, version=version, actor=actor, reason=assign_reason)
    if candidate_status is not None:
        session.get(Candidate, rollout.candidate_id).status = candidate_status
    record_audit(
        session,
        actor=actor,
        action=action,
        subject_type="rollout",
        subject_id=str(rollout.id),
        before=before,
        after=after,
        reason=reason,
    )
