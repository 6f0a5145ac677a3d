"""Approvals: only a fleet manager may approve or reject a candidate; engineers may comment.

Plain keyword-only functions used by the CLI, the API and the nightly flow alike. Every
call writes its Decision and an audit row in the caller's transaction.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.approval.users import PermissionDenied, article
from services.errors import NotFound
from services.store import record_audit
from services.store.models import Candidate, Decision, User

APPROVER_ROLES = frozenset({"fleet-manager"})
# The actor recorded when demo mode approves on its own (FLYWHEEL_AUTO_APPROVE=true).
AUTO_APPROVER = "auto-approve (demo mode)"


class DecisionConflict(Exception):
    """The candidate is not in a state that allows this decision."""


def find_candidate(session: Session, ref: str) -> Candidate:
    """A candidate by model version or candidate id."""
    candidate = session.scalar(select(Candidate).where(Candidate.model_version == ref))
    if candidate is None:
        candidate = session.get(Candidate, ref)
    if candidate is None:
        raise NotFound(f"no candidate with model version or id {ref!r}")
    return candidate


def approval_of(*, session: Session, candidate_id: str) -> Decision | None:
    """The approval or rejection of a candidate, if one was made."""
    return session.scalar(
        select(Decision).where(Decision.candidate_id == candidate_id, Decision.kind == "approval")
    )


def approve(*, session: Session, candidate_id: str, user: User, reason: str) -> Decision:
    return _decide(session, candidate_id, user.name, user.role, "approved", reason)


def reject(*, session: Session, candidate_id: str, user: User, reason: str) -> Decision:
    return _decide(session, candidate_id, user.name, user.role, "rejected", reason)


def auto_approve(*, session: Session, candidate_id: str) -> Decision:
    """Demo mode: approve a candidate that passed the gate, recorded as such."""
    return _decide(
        session,
        candidate_id,
        AUTO_APPROVER,
        "fleet-manager",
        "approved",
        "passed the gate; auto-approval is on for the simulated fleet",
        allowed_status=("passed",),
    )


def comment(*, session: Session, candidate_id: str, user: User, text: str) -> Decision:
    candidate = find_candidate(session, candidate_id)
    if not text.strip():
        raise ValueError("a comment needs text")
    decision = Decision(
        candidate_id=candidate.id, kind="comment", verdict="comment", actor=user.name, reason=text
    )
    session.add(decision)
    record_audit(
        session,
        actor=user.name,
        action="comment",
        subject_type="candidate",
        subject_id=candidate.id,
        reason=text,
    )
    session.flush()
    return decision


def _decide(
    session: Session,
    candidate_id: str,
    actor: str,
    role: str,
    verdict: str,
    reason: str,
    allowed_status: tuple[str, ...] = ("passed", "inconclusive"),
) -> Decision:
    if role not in APPROVER_ROLES:
        raise PermissionDenied(
            f"{actor} is {article(role)}: only a fleet manager may approve or reject"
        )
    if not reason or not reason.strip():
        raise ValueError("a decision needs a reason")
    candidate = find_candidate(session, candidate_id)
    existing = approval_of(session=session, candidate_id=candidate.id)
    if existing is not None:
        raise DecisionConflict(
            f"candidate {candidate.id} was already {existing.verdict} by {existing.actor}"
        )
    if candidate.status not in allowed_status:
        raise DecisionConflict(
            f"candidate {candidate.id} is {candidate.status}: only a candidate that is "
            f"{' or '.join(allowed_status)} can be {verdict}"
        )
    decision = Decision(
        candidate_id=candidate.id, kind="approval", verdict=verdict, actor=actor, reason=reason
    )
    session.add(decision)
    before = candidate.status
    candidate.status = verdict
    action = {"approved": "approve", "rejected": "reject"}[verdict]
    record_audit(
        session,
        actor=actor,
        action=action,
        subject_type="candidate",
        subject_id=candidate.id,
        before={"status": before},
        after={"status": verdict},
        reason=reason,
    )
    session.flush()
    return decision
