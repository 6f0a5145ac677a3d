import pytest
from sqlalchemy import select

from services.approval.decisions import (
    AUTO_APPROVER,
    DecisionConflict,
    PermissionDenied,
    approve,
    comment,
    reject,
)
from services.approval.requests import open_approval_request, wait_for_decision
from services.approval.users import add_user, get_user
from services.store import session_scope
from services.store.models import AuditEvent, Candidate
from tests.conftest import add_candidate


def _candidate(db_url: str, status: str, cid: str = "c1") -> None:
    add_candidate(db_url, cid, version=cid.upper(), status=status)


@pytest.fixture
def users(store_settings):
    with session_scope(store_settings.db_url) as session:
        add_user(session=session, name="erin", role="engineer")
        add_user(session=session, name="fatima", role="fleet-manager")
    with session_scope(store_settings.db_url) as session:
        return {
            "eng": get_user(session=session, name="erin"),
            "fm": get_user(session=session, name="fatima"),
        }


def test_only_a_fleet_manager_may_approve_and_engineers_may_comment(store_settings, users):
    _candidate(store_settings.db_url, "passed")
    with pytest.raises(PermissionDenied), session_scope(store_settings.db_url) as session:
        approve(session=session, candidate_id="c1", user=users["eng"], reason="looks good")
    with session_scope(store_settings.db_url) as session:
        comment(session=session, candidate_id="c1", user=users["eng"], text="push regressed?")
        decision = approve(session=session, candidate_id="C1", user=users["fm"], reason="canary ok")
        assert decision.candidate_id == "c1"
    with session_scope(store_settings.db_url) as session:
        assert session.get(Candidate, "c1").status == "approved"
        audit = session.scalars(select(AuditEvent).where(AuditEvent.subject_id == "c1")).all()
        assert [(a.actor, a.action) for a in audit] == [("erin", "comment"), ("fatima", "approve")]
        assert audit[1].before == {"status": "passed"} and audit[1].reason == "canary ok"


def test_a_failed_candidate_cannot_be_approved_and_decisions_are_final(store_settings, users):
    _candidate(store_settings.db_url, "failed")
    _candidate(store_settings.db_url, "inconclusive", "c2")
    with pytest.raises(DecisionConflict, match="failed"), session_scope(store_settings.db_url) as s:
        approve(session=s, candidate_id="c1", user=users["fm"], reason="ship it")
    with session_scope(store_settings.db_url) as session:
        reject(session=session, candidate_id="c2", user=users["fm"], reason="not enough evidence")
    with (
        pytest.raises(DecisionConflict, match="already rejected"),
        session_scope(store_settings.db_url) as session,
    ):
        approve(session=session, candidate_id="c2", user=users["fm"], reason="changed my mind")


def test_a_decision_needs_a_reason(store_settings, users):
    _candidate(store_settings.db_url, "passed")
    with pytest.raises(ValueError, match="reason"), session_scope(store_settings.db_url) as session:
        approve(session=session, candidate_id="c1", user=users["fm"], reason="  ")


def test_auto_approval_only_for_passed_candidates_and_only_when_enabled(store_settings):
    _candidate(store_settings.db_url, "passed")
    _candidate(store_settings.db_url, "inconclusive", "c2")
    assert open_approval_request(store_settings, "c1").status == "awaiting"
    demo = store_settings.updated(approval={"auto_approve": True})
    state = open_approval_request(demo, "c1")
    assert state.status == "approved" and state.actor == AUTO_APPROVER
    assert open_approval_request(demo, "c2").status == "awaiting"  # inconclusive goes to a human
    with session_scope(store_settings.db_url) as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "approve")).one()
        assert audit.actor == AUTO_APPROVER


def test_the_night_waits_on_the_decisions_table_until_a_fleet_manager_decides(
    store_settings, users
):
    _candidate(store_settings.db_url, "inconclusive")
    looks = []

    def fleet_manager_decides_while_we_wait(seconds: float) -> None:
        looks.append(seconds)
        if len(looks) == 2:  # decided from elsewhere (API, web app, CLI) during the wait
            with session_scope(store_settings.db_url) as session:
                reject(session=session, candidate_id="c1", user=users["fm"], reason="push worse")

    state = wait_for_decision(
        store_settings, "c1", timeout_s=60, poll_s=5, sleep=fleet_manager_decides_while_we_wait
    )
    assert state.status == "rejected" and state.actor == "fatima" and looks == [5, 5]


def test_the_wait_ends_with_the_candidate_awaiting_when_no_one_decides(store_settings):
    _candidate(store_settings.db_url, "inconclusive")
    state = wait_for_decision(store_settings, "c1", timeout_s=0.05, poll_s=0.01)
    assert state.status == "awaiting" and "flywheel approve C1" in state.reason
    # Embedded default: do not hold the machine; production waits hours.
    assert store_settings.approval_wait == 0
    production = store_settings.model_copy(update={"mode": "production"})
    assert production.approval_wait == 4 * 3600
