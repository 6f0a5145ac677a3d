"""The rollback drill's candidate: the champion with its output layer zeroed, approved as
"rollout drill" without the gate, and said so in the audit log."""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import select

from policies.checkpoint import load_checkpoint
from services.registry.ledger import promote
from services.registry.mlflow_registry import policy_checkpoint
from services.rollout.controller import start_rollout
from services.rollout.drill import DRILL_ACTOR, register_worse_candidate
from services.serving.robots import provision_robots
from services.store import session_scope
from services.store.models import AuditEvent, Candidate, Decision, Robot
from tests.conftest import add_candidate

pytestmark = pytest.mark.slow


def _output_layer(version_dir) -> torch.nn.Linear:
    policy = load_checkpoint(version_dir)
    return [m for m in policy.model.modules() if isinstance(m, torch.nn.Linear)][-1]


@pytest.fixture
def champion(settings, register):
    """Model version 1 is champion of a four-robot fleet."""
    version = register(settings, candidate_id="c0").version
    add_candidate(settings.db_url, "c0", version=version, status="deployed")
    with session_scope(settings.db_url, write=True) as session:
        promote(
            session=session,
            expected=None,
            new=version,
            candidate_id="c0",
            actor="t",
            reason="first",
        )
        provision_robots(session=session, robot_ids=["r0", "r1", "r2", "r3"], tasks=["toy-reach"])
    return version


def test_the_drill_needs_a_champion(settings):
    with pytest.raises(RuntimeError, match="needs a champion"):
        register_worse_candidate(settings)


def test_the_drill_registers_the_champion_with_its_output_layer_zeroed(settings, champion):
    candidate_id = register_worse_candidate(settings)
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        assert (candidate.status, candidate.parent_version) == ("approved", champion)
        assert candidate.dataset_id == "d1"  # the champion's data
        version = candidate.model_version
        decision = session.scalars(
            select(Decision).where(Decision.candidate_id == candidate_id)
        ).one()
        assert (decision.verdict, decision.actor) == ("approved", DRILL_ACTOR)
        assert "without the gate" in decision.reason
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.subject_id == candidate_id)
        ).one()
        assert (audit.actor, audit.action, audit.after["model_version"]) == (
            DRILL_ACTOR,
            "approve",
            version,
        )
    assert version != champion
    worse = _output_layer(policy_checkpoint(settings, version))
    assert not worse.weight.any() and not worse.bias.any()
    assert _output_layer(policy_checkpoint(settings, champion)).weight.any()  # untouched
    meta = load_checkpoint(policy_checkpoint(settings, version)).meta
    assert meta["drill"] == f"champion {champion} with its output layer zeroed"


def test_the_drill_candidate_is_the_same_on_a_second_run_and_rolls_out_to_the_canary(
    settings, champion
):
    candidate_id = register_worse_candidate(settings)
    assert register_worse_candidate(settings) == candidate_id
    with session_scope(settings.db_url) as session:
        assert (
            len(session.scalars(select(Candidate).where(Candidate.id == candidate_id)).all()) == 1
        )
        approvals = session.scalars(
            select(Decision).where(Decision.candidate_id == candidate_id)
        ).all()
        assert len(approvals) == 1
    rollout = start_rollout(settings, candidate_id, actor=DRILL_ACTOR)
    assert rollout.state == "in_progress" and rollout.stages[0]["name"] == "canary"
    with session_scope(settings.db_url) as session:
        on_drill = [r.id for r in session.scalars(select(Robot)) if r.policy_version != champion]
    assert on_drill == rollout.stages[0]["robots"]  # the rest stay on the champion
