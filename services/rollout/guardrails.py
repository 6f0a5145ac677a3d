"""Guardrails outside the statistics: a safety event or an emergency stop on a robot that
runs the candidate halts the rollout at once and returns every candidate robot to the
champion. No test weighs them: one is enough.

A robot reports them in its heartbeat (``safety_events``, ``emergency_stop``). The robot
API halts in the same transaction that stores the heartbeat (``guard_heartbeat``), so the
answer to that very heartbeat already assigns the champion; the controller also looks for
them in every window (``step_rollout``), for reports stored another way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from services.registry.ledger import lock_champion
from services.rollout.transitions import in_progress, return_to_champion
from services.store.models import Heartbeat, Rollout

GUARDRAIL = "guardrail"


def safety_report(heartbeat: Heartbeat) -> dict[str, Any]:
    return {
        "robot_id": heartbeat.robot_id,
        "safety_events": heartbeat.safety_events,
        "emergency_stop": heartbeat.emergency_stop,
    }


def halt_for_safety(
    session: Session, rollout: Rollout, *, reports: Sequence[dict[str, Any]]
) -> None:
    """Halt ``rollout`` for these safety reports from its candidate robots (audited as
    ``halt-rollout`` by the guardrail, the reports in the reason)."""
    what = "; ".join(
        f"{r['robot_id']}: "
        + ("emergency stop" if r["emergency_stop"] else "")
        + (" and " if r["emergency_stop"] and r["safety_events"] else "")
        + (f"{r['safety_events']} safety event(s)" if r["safety_events"] else "")
        for r in reports
    )
    return_to_champion(
        session,
        rollout,
        "halted",
        actor=GUARDRAIL,
        reason=f"guardrail: {what} on the candidate {rollout.to_version}",
        action="halt-rollout",
    )


def guard_heartbeat(*, session: Session, heartbeat: Heartbeat) -> Rollout | None:
    """Halt the rollout under way if this heartbeat reports a safety event or an emergency
    stop while running its candidate; returns the halted rollout, or None."""
    if not (heartbeat.safety_events or heartbeat.emergency_stop):
        return None
    lock_champion(session=session)
    rollout = in_progress(session)
    if rollout is None or rollout.to_version != heartbeat.policy_version:
        return None
    halt_for_safety(session, rollout, reports=[safety_report(heartbeat)])
    return rollout
