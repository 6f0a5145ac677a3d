"""A fleet manager's controls over shadow runs and the field gate, as the API and the CLI
both do them (role checked here, so neither can skip it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.approval.decisions import find_candidate
from services.approval.users import require_role
from services.errors import NotFound
from services.shadow.field_gate import FieldThresholds, current_thresholds, set_thresholds
from services.shadow.runs import end_shadow, running_shadow, start_shadow
from services.store.models import FieldGateThresholds, ShadowRun, User

MANAGER = "fleet-manager"


def start_as(*, session: Session, user: User, ref: str, reason: str) -> dict[str, Any]:
    """Run candidate ``ref`` (model version or id) as the fleet's shadow."""
    require_role(user, MANAGER, action="start a shadow run")
    candidate = find_candidate(session, ref)
    return run_out(
        start_shadow(session=session, candidate_id=candidate.id, actor=user.name, reason=reason)
    )


def stop_as(*, session: Session, user: User, reason: str) -> dict[str, Any]:
    require_role(user, MANAGER, action="stop a shadow run")
    run = running_shadow(session=session)
    if run is None:
        raise NotFound("no shadow run is under way")
    return run_out(end_shadow(session=session, run=run, actor=user.name, reason=reason))


def set_thresholds_as(
    *, session: Session, user: User, values: dict[str, Any], reason: str
) -> dict[str, Any]:
    require_role(user, MANAGER, action="set the field gate's thresholds")
    row = set_thresholds(
        session=session,
        thresholds=FieldThresholds.from_json(values),
        actor=user.name,
        reason=reason,
    )
    return thresholds_out(row)


def thresholds_overview(*, session: Session) -> dict[str, Any]:
    """The thresholds in force (the newest version) and every version, newest first."""
    versions = session.scalars(
        select(FieldGateThresholds).order_by(FieldGateThresholds.version.desc())
    )
    current = current_thresholds(session=session)
    return {
        "current": None if current is None else thresholds_out(current),
        "versions": [thresholds_out(v) for v in versions],
    }


def run_out(run: ShadowRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "candidate_id": run.candidate_id,
        "version": run.version,
        "champion_version": run.champion_version,
        "state": run.state,
        "started_by": run.started_by,
        "started_at": run.started_at.isoformat(),
        "ended_at": run.ended_at.isoformat() if run.ended_at else None,
        "reason": run.reason,
    }


def thresholds_out(row: FieldGateThresholds) -> dict[str, Any]:
    return {
        "version": row.version,
        "thresholds": row.thresholds,
        "set_by": row.set_by,
        "set_at": row.set_at.isoformat(),
        "reason": row.reason,
    }
