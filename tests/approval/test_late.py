"""Late approvals: approved after their night stopped waiting, rolled out the next night."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.approval.late import roll_out_approved
from services.registry import mlflow_registry as registry
from services.registry.ledger import champion_of
from services.rollout.controller import start_rollout
from services.store import session_scope
from services.store.models import AuditEvent, Candidate
from tests.rollout.candidates import register_candidates

pytestmark = pytest.mark.slow


def test_a_late_approval_rolls_out_next_night_unless_the_champion_moved_on(settings, register):
    settings = settings.updated(rollout={"stages": (1.0,)})
    # c0 is champion 1; c1 and c2 were both evaluated against it and approved after their
    # nights stopped waiting. The first to go replaces 1; the other is now stale.
    register_candidates(settings, register, ["approved", "approved", "approved"], [None, "1", "1"])
    start_rollout(settings, "c0", actor="nightly")
    outcomes = roll_out_approved(settings, actor="nightly")
    assert outcomes[0] == "candidate c1 rollout 2 started: fleet stage"
    assert outcomes[1].startswith("candidate c2 superseded: approved against champion 1")
    with session_scope(settings.db_url) as session:
        assert champion_of(session=session) == "2"
        assert session.get(Candidate, "c2").status == "superseded"
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "supersede")).one()
        assert audit.before == {"status": "approved"}
    assert registry.champion_version(settings) == "2"
    assert roll_out_approved(settings, actor="nightly") == []  # nothing left to do
