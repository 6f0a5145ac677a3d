"""The approve stage as the nightly flow sees it: decided, auto-approved, or waiting."""

from __future__ import annotations

from dataclasses import dataclass

from services.approval.decisions import approval_of, auto_approve
from services.config import Settings
from services.store import session_scope
from services.store.models import Candidate


@dataclass(frozen=True)
class ApprovalState:
    # approved | rejected | awaiting (a fleet manager must decide) | ineligible (gate failed)
    status: str
    actor: str | None = None
    reason: str | None = None


def request_approval(settings: Settings, candidate_id: str) -> ApprovalState:
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None:
            raise LookupError(f"unknown candidate {candidate_id}")
        decision = approval_of(session=session, candidate_id=candidate_id)
        if decision is None and candidate.status == "passed" and settings.auto_approve:
            decision = auto_approve(session=session, candidate_id=candidate_id)
        if decision is not None:
            return ApprovalState(decision.verdict, decision.actor, decision.reason)
        if candidate.status in ("passed", "inconclusive"):
            return ApprovalState(
                "awaiting",
                reason=f"gate {candidate.status}: waiting for a fleet manager "
                f"(`flywheel approve {candidate.model_version} --reason ...`)",
            )
        return ApprovalState("ineligible", reason=f"candidate is {candidate.status}")
