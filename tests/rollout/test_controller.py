"""Rollout: approved candidates reach every robot; the ledger leads, the MLflow alias follows."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.registry import mlflow_registry as registry
from services.registry.ledger import PromotionConflict, champion_of
from services.rollout.champion import reconcile_champion
from services.rollout.controller import RolloutError, halt_rollout, rollback, start_rollout
from services.rollout.plan import RolloutPlan
from services.store import session_scope
from services.store.models import AuditEvent, Candidate, Robot
from tests.rollout.candidates import register_candidates

pytestmark = pytest.mark.slow
# Straight to the whole fleet: the ledger tests need no canary.
WHOLE_FLEET = RolloutPlan.of((1.0,))


def test_only_approved_candidates_roll_out_and_the_alias_follows_the_ledger(
    settings,
    register,
):
    register_candidates(settings, register, ["approved", "failed", "approved"], [None, "1", "1"])
    with pytest.raises(RolloutError, match="only an approved candidate"):
        start_rollout(settings, "c1", actor="fatima")

    first = start_rollout(settings, "c0", actor="fatima")
    assert start_rollout(settings, "c0", actor="fatima").id == first.id  # idempotent
    second = start_rollout(settings, "c2", actor="fatima", plan=WHOLE_FLEET)
    assert (second.from_version, second.to_version) == ("1", "3")
    with session_scope(settings.db_url) as session:
        assert champion_of(session=session) == "3"
        assert {r.policy_version for r in session.scalars(select(Robot))} == {"3"}
        assigned = session.scalars(select(AuditEvent).where(AuditEvent.action == "assign")).all()
        assert len(assigned) == 6 and assigned[-1].after == {"policy_version": "3"}
    assert registry.champion_version(settings) == "3"

    back = rollback(settings, actor="fatima", reason="interventions doubled")
    assert back.state == "rolled_back"
    with session_scope(settings.db_url) as session:
        assert champion_of(session=session) == "1"
        assert {r.policy_version for r in session.scalars(select(Robot))} == {"1"}
        assert session.get(Candidate, "c2").status == "rolled_back"
    assert registry.champion_version(settings) == "1"


def test_reconcile_repairs_an_alias_that_drifted_from_the_ledger(settings, register):
    register_candidates(settings, register, ["approved", "approved"])
    start_rollout(settings, "c0", actor="nightly")
    registry.set_champion(settings, "2")  # e.g. a crash between ledger commit and alias move
    assert reconcile_champion(settings) is True
    assert registry.champion_version(settings) == "1"
    assert reconcile_champion(settings) is False


def test_rollback_with_nothing_to_return_to_changes_nothing(settings, register):
    register_candidates(settings, register, ["approved"])
    with pytest.raises(RolloutError, match="nothing to roll back"):
        rollback(settings, actor="fatima", reason="just in case")
    start_rollout(settings, "c0", actor="nightly")
    with pytest.raises(RolloutError, match="nothing to roll back"):
        rollback(settings, actor="fatima", reason="first champion has no predecessor")
    assert registry.champion_version(settings) == "1"


def test_ten_concurrent_promotions_give_one_champion_and_nine_conflicts(store_settings, register):
    from concurrent.futures import ThreadPoolExecutor

    from services.store.models import Promotion

    register_candidates(store_settings, register, ["approved"] * 11, [None] + ["1"] * 10)
    start_rollout(store_settings, "c0", actor="nightly")  # v1 is champion

    def attempt(i: int) -> str:
        try:
            start_rollout(store_settings, f"c{i}", actor=f"manager-{i}", plan=WHOLE_FLEET)
            return "promoted"
        except PromotionConflict:
            return "conflict"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(attempt, range(1, 11)))
    assert sorted(outcomes) == ["conflict"] * 9 + ["promoted"]
    winner = f"{outcomes.index('promoted') + 2}"  # c{i} is version i + 1
    with session_scope(store_settings.db_url) as session:
        assert champion_of(session=session) == winner
        ledger = session.scalars(select(Promotion).order_by(Promotion.generation)).all()
        assert [(p.from_version, p.to_version) for p in ledger] == [(None, "1"), ("1", winner)]
        # the losers changed nothing: no rollout row, no assignment, status still approved
        assert {r.policy_version for r in session.scalars(select(Robot))} == {winner}
        assert sum(c.status == "approved" for c in session.scalars(select(Candidate))) == 9
    assert registry.champion_version(store_settings) == winner


@pytest.mark.fault
def test_a_crash_between_ledger_and_alias_is_repaired_on_the_next_run(
    settings, register, monkeypatch
):
    import services.rollout.controller as controller

    register_candidates(settings, register, ["approved", "approved"], [None, "1"])
    start_rollout(settings, "c0", actor="nightly")

    def crash(settings):
        raise SystemExit("killed after the ledger committed")

    monkeypatch.setattr(controller, "reconcile_champion", crash)
    with pytest.raises(SystemExit):
        start_rollout(settings, "c1", actor="nightly", plan=WHOLE_FLEET)
    assert registry.champion_version(settings) == "1"  # the alias lags behind the ledger
    monkeypatch.setattr(controller, "reconcile_champion", reconcile_champion)
    assert reconcile_champion(settings) is True  # what the next night does first
    assert registry.champion_version(settings) == "2"


def test_a_candidate_passed_on_field_evidence_starts_at_a_canary_even_on_a_one_stage_plan(
    settings, register
):
    from services.store.models import Decision

    register_candidates(settings, register, ["approved", "approved", "approved"], [None, "1", "1"])
    start_rollout(settings, "c0", actor="nightly")  # v1 is champion
    with session_scope(settings.db_url, write=True) as session:
        for candidate, evidence in (("c1", ["toy-reach"]), ("c2", [])):
            session.add(
                Decision(
                    candidate_id=candidate,
                    kind="gate",
                    verdict="pass",
                    actor="gate",
                    details={"evidence": {"closed_loop": [], "field": evidence}},
                )
            )
    field = start_rollout(settings, "c1", actor="fatima", plan=WHOLE_FLEET)
    assert [s["name"] for s in field.stages] == ["canary", "fleet"]
    assert field.state == "in_progress" and len(field.stages[0]["robots"]) == 1  # of 6, 25%
    halt_rollout(settings, actor="fatima", reason="the next candidate")
    closed_loop = start_rollout(settings, "c2", actor="fatima", plan=WHOLE_FLEET)
    assert [s["name"] for s in closed_loop.stages] == ["fleet"]
