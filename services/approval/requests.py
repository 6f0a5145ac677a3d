"""The approve stage as the nightly flow sees it: decided, auto-approved, or waiting.

The flow waits on the decisions table: a fleet manager decides through the API, the web
app or the CLI, from anywhere, and the waiting run sees the row on its next look. If no
one decides within the wait, the night ends with the candidate awaiting; an approval given
later is rolled out at the start of the next night (``late.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from services.approval.decisions import approval_of, auto_approve
from services.config import Settings
from services.store import record_audit, session_scope
from services.store.models import AuditEvent, Candidate

# The audit action of a candidate starting to wait for a fleet manager.
APPROVAL_REQUESTED = "approval-requested"


@dataclass(frozen=True)
class ApprovalState:
    # approved | rejected | awaiting (a fleet manager must decide) | ineligible (gate failed)
    status: str
    actor: str | None = None
    reason: str | None = None


def open_approval_request(settings: Settings, candidate_id: str) -> ApprovalState:
    """The decision on a candidate now, auto-approving in demo mode where allowed."""
    with session_scope(settings.db_url, write=True) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None:
            raise LookupError(f"unknown candidate {candidate_id}")
        decision = approval_of(session=session, candidate_id=candidate_id)
        if decision is None and candidate.status == "passed" and settings.approval.auto_approve:
            decision = auto_approve(session=session, candidate_id=candidate_id)
        if decision is not None:
            return ApprovalState(decision.verdict, decision.actor, decision.reason)
        if candidate.status in ("passed", "inconclusive"):
            reason = (
                f"gate {candidate.status}: waiting for a fleet manager "
                f"(`flywheel approve {candidate.model_version} --reason ...`)"
            )
            _record_request(session, candidate, reason)
            return ApprovalState("awaiting", reason=reason)
        return ApprovalState("ineligible", reason=f"candidate is {candidate.status}")


def _record_request(session, candidate: Candidate, reason: str) -> None:
    """Audit the wait once per candidate (the notifier tells fleet managers of it), however
    often the waiting run looks again."""
    asked = session.scalar(
        select(AuditEvent.id).where(
            AuditEvent.action == APPROVAL_REQUESTED, AuditEvent.subject_id == candidate.id
        )
    )
    if asked is None:
        record_audit(
            session,
            actor="approval",
            action=APPROVAL_REQUESTED,
            subject_type="candidate",
            subject_id=candidate.id,
            after={"status": candidate.status},
            reason=reason,
        )


def wait_for_decision(
    settings: Settings,
    candidate_id: str,
    *,
    timeout_s: float | None = None,
    poll_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ApprovalState:
    """Look at the decisions table until the candidate is decided or the wait runs out."""
    timeout_s = settings.approval_wait if timeout_s is None else timeout_s
    poll_s = settings.approval.approval_poll_s if poll_s is None else poll_s
    deadline = time.monotonic() + timeout_s
    while True:
        state = open_approval_request(settings, candidate_id)
        remaining = deadline - time.monotonic()
        if state.status != "awaiting" or remaining <= 0:
            return state
        sleep(min(poll_s, remaining))
