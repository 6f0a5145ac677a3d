"""The field gate's verdicts on made-up evidence, and its thresholds' versions."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from services.evaluation.gate import FAIL, INCONCLUSIVE, PASS, GateVerdict
from services.shadow.field_gate import (
    FieldThresholds,
    combine,
    current_thresholds,
    judge_field,
    set_thresholds,
)
from services.shadow.report import ShadowEvidence, TaskEvidence
from services.store import migrate, session_scope
from services.store.models import AuditEvent

THRESHOLDS = FieldThresholds(min_episodes=10, max_distance_difference=0.0, min_agreement=0.6)


def _evidence(episodes=20, closer=0.2, agreement=0.9, successes=10, seed=0) -> ShadowEvidence:
    """``episodes`` shadow episodes: the candidate ``closer`` nearer the operator than the
    champion (negative: farther), agreeing on ``agreement`` of the champion's success steps."""
    rng = np.random.default_rng(seed)
    champion = rng.uniform(0.4, 0.6, episodes)
    task = TaskEvidence(
        "t",
        episodes=episodes,
        candidate_distance=list(champion - closer + rng.normal(0, 0.05, episodes)),
        champion_distance=list(champion),
        operator_steps=10 * episodes,
        takeovers=[1] * episodes,
        differs=[1] * episodes,
        success_steps=[100] * successes,
        agreeing=list(np.clip(rng.normal(agreement * 100, 3, successes), 0, 100).astype(int)),
    )
    return ShadowEvidence("2", "1", {"t": task}, 2000, 0, {})


@pytest.mark.parametrize(
    ("evidence", "verdict", "says"),
    [
        (_evidence(), PASS, "meets the thresholds"),
        (_evidence(closer=-0.2), FAIL, "farther from the operator"),
        (_evidence(agreement=0.3), FAIL, "agrees with the champion's successes"),
        (_evidence(closer=0.0), INCONCLUSIVE, "distance difference <="),
        (_evidence(episodes=6), INCONCLUSIVE, "6 shadow episodes, fewer than the 10"),
        (_evidence(successes=3), INCONCLUSIVE, "3 autonomous successes"),
    ],
)
def test_field_verdicts(evidence, verdict, says):
    judged = judge_field(evidence, ["t"], THRESHOLDS, 1)
    assert judged.verdict == verdict, judged.reason
    assert says in judged.reason
    assert judged.numbers["thresholds_version"] == 1


def test_without_thresholds_set_field_evidence_goes_to_a_fleet_manager():
    judged = judge_field(_evidence(), ["t"], None)
    assert judged.verdict == INCONCLUSIVE and "flywheel field-gate set" in judged.reason


def test_a_candidate_passes_only_if_both_kinds_of_evidence_pass():
    field = judge_field(_evidence(), ["t"], THRESHOLDS)
    closed = {v: GateVerdict(v, v, {}) for v in (PASS, FAIL, INCONCLUSIVE)}
    assert combine(closed[PASS], field, ["t"], ["u"]).verdict == PASS
    assert combine(closed[FAIL], field, ["t"], ["u"]).verdict == FAIL
    assert combine(closed[INCONCLUSIVE], field, ["t"], ["u"]).verdict == INCONCLUSIVE
    assert combine(None, field, ["t"], []).verdict == PASS
    both = combine(closed[PASS], field, ["t"], ["u"])
    assert both.numbers["evidence"] == {"closed_loop": ["u"], "field": ["t"]}


def test_thresholds_are_versioned_audited_and_a_night_uses_those_set_before_it(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    migrate(db)
    with session_scope(db, write=True) as session:
        first = set_thresholds(session=session, thresholds=THRESHOLDS, actor="fatima", reason="a")
        night = first.set_at + timedelta(seconds=1)
        second = set_thresholds(
            session=session, thresholds=FieldThresholds(min_episodes=40), actor="ole", reason="b"
        )
        second.set_at = night + timedelta(hours=1)  # set after the night began
    with session_scope(db) as session:
        assert current_thresholds(session=session, before=night).version == first.version
        assert current_thresholds(session=session).version == second.version
        assert current_thresholds(session=session, before=first.set_at - timedelta(1)) is None
        audit = session.query(AuditEvent).filter_by(action="field_gate_thresholds").all()
    assert [(a.actor, a.after["min_episodes"]) for a in audit] == [("fatima", 10), ("ole", 40)]
    assert audit[1].before["min_episodes"] == 10


def test_thresholds_refuse_what_cannot_be_judged():
    with pytest.raises(ValueError, match="min_episodes"):
        FieldThresholds(min_episodes=1)
    with pytest.raises(ValueError, match="unknown field-gate thresholds"):
        FieldThresholds.from_json({"min_episode": 5})
