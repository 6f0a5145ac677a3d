"""Which candidate runs as the fleet's shadow: started, looked up and ended in the store.

At most one shadow runs at a time: starting another ends the one running (superseded). Each
start and end is audited.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.store import record_audit
from services.store.models import Candidate, ShadowRun, utcnow


class ShadowError(Exception):
    """A shadow that cannot be started: no such candidate, or it has no model yet."""


def running_shadow(*, session: Session) -> ShadowRun | None:
    return session.scalar(
        select(ShadowRun).where(ShadowRun.state == "running").order_by(ShadowRun.id.desc())
    )


def start_shadow(
    *, session: Session, candidate_id: str, actor: str, reason: str | None = None
) -> ShadowRun:
    """Run ``candidate_id`` as the shadow of its parent (the champion it would replace)."""
    candidate = session.get(Candidate, candidate_id)
    if candidate is None:
        raise ShadowError(f"unknown candidate {candidate_id}")
    if candidate.model_version is None:
        raise ShadowError(f"candidate {candidate_id} has no registered model to run")
    running = running_shadow(session=session)
    if running is not None:
        if running.candidate_id == candidate_id:
            return running
        end_shadow(
            session=session, run=running, actor=actor, reason=f"superseded by {candidate_id}"
        )
    run = ShadowRun(
        candidate_id=candidate_id,
        version=candidate.model_version,
        champion_version=candidate.parent_version,
        state="running",
        started_by=actor,
        reason=reason,
    )
    session.add(run)
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="shadow_start",
        subject_type="candidate",
        subject_id=candidate_id,
        before=None,
        after={"shadow_run": run.id, "version": run.version, "beside": run.champion_version},
        reason=reason,
    )
    return run


def end_shadow(*, session: Session, run: ShadowRun, actor: str, reason: str) -> ShadowRun:
    if run.state == "ended":
        return run
    run.state, run.ended_at, run.reason = "ended", utcnow(), reason
    record_audit(
        session,
        actor=actor,
        action="shadow_end",
        subject_type="candidate",
        subject_id=run.candidate_id,
        before={"state": "running"},
        after={"state": "ended", "shadow_run": run.id},
        reason=reason,
    )
    return run


def shadow_of(*, session: Session, candidate_id: str) -> ShadowRun | None:
    """The candidate's latest shadow run, running or ended."""
    return session.scalar(
        select(ShadowRun)
        .where(ShadowRun.candidate_id == candidate_id)
        .order_by(ShadowRun.id.desc())
    )
