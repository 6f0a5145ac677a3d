"""Which candidate a night judges on field evidence, and when it waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.evaluation.gate import record_verdict
from services.registry.ledger import promote
from services.shadow.judging import (
    close_shadow,
    judge_shadow,
    needs_field_evidence,
    shadow_candidate_tonight,
    waiting_shadow,
)
from services.store import session_scope
from services.store.models import AuditEvent, Candidate, NightlyRun, ShadowRun
from tests.conftest import add_candidate


def _champion(settings, version: str, expected: str | None) -> None:
    with session_scope(settings.db_url, write=True) as session:
        promote(
            session=session,
            expected=expected,
            new=version,
            candidate_id=None,
            actor="t",
            reason="t",
        )


def test_a_candidate_waits_shadowing_and_is_superseded_if_the_champion_changes(settings, register):
    settings = settings.updated(
        fleet={"tasks": ("toy-reach",)}, evaluation={"field_tasks": ("toy-reach",)}
    )
    versions = [register(settings, f"m{i}").version for i in (1, 2, 3)]
    assert versions == ["1", "2", "3"]  # the models the field verdict's offline errors load
    _champion(settings, "1", None)
    add_candidate(settings.db_url, "c2", version="2", status="registered", parent="1")
    add_candidate(settings.db_url, "c0", version="0", status="registered")
    assert needs_field_evidence(settings, "c2")
    assert not needs_field_evidence(settings, "c0")  # the first policy: nothing to shadow
    assert not needs_field_evidence(settings.updated(evaluation={"field_tasks": ()}), "c2")

    run = shadow_candidate_tonight(settings, "c2", actor="nightly")
    assert (run.version, run.champion_version) == ("2", "1")
    with session_scope(settings.db_url) as session:
        assert session.get(Candidate, "c2").status == "shadowing"
    assert waiting_shadow(settings, actor="nightly").id == run.id

    # The shift brought nothing: the night waits, and says so.
    verdict, why = judge_shadow(settings, run, [], night_started=datetime.now(UTC), actor="nightly")
    assert verdict is None and why.startswith("shadowing: toy-reach 0/8 shadow episodes")

    # After the last night it may wait, it is judged on what there is: inconclusive.
    with session_scope(settings.db_url, write=True) as session:
        for _ in range(settings.shadow.max_nights):
            session.add(NightlyRun(started_at=run.started_at + timedelta(seconds=1)))
    verdict, _ = judge_shadow(settings, run, [], night_started=datetime.now(UTC), actor="n")
    assert verdict.verdict == "inconclusive" and "no field-gate thresholds" in verdict.reason
    assert verdict.numbers["evidence"] == {"closed_loop": [], "field": ["toy-reach"]}
    # The verdict is stored; a night that died before ending the run finds it again.
    record_verdict(settings.db_url, "c2", verdict)
    assert waiting_shadow(settings, actor="nightly").id == run.id
    again, _ = judge_shadow(settings, run, [], night_started=datetime.now(UTC), actor="n")
    assert (again.verdict, again.reason) == (verdict.verdict, verdict.reason)
    close_shadow(settings, run, verdict, actor="nightly")
    assert waiting_shadow(settings, actor="nightly") is None
    with session_scope(settings.db_url) as session:
        assert session.get(ShadowRun, run.id).state == "ended"
        assert session.get(Candidate, "c2").status == "inconclusive"

    # A new shadow whose champion is replaced before it is judged is superseded.
    add_candidate(settings.db_url, "c3", version="3", status="registered", parent="1")
    shadow_candidate_tonight(settings, "c3", actor="nightly")
    _champion(settings, "2", "1")
    assert waiting_shadow(settings, actor="nightly") is None
    with session_scope(settings.db_url) as session:
        assert session.get(Candidate, "c3").status == "superseded"
        actions = [a.action for a in session.query(AuditEvent).order_by(AuditEvent.id)]
    assert actions[-2:] == ["shadow_end", "supersede"]


def test_field_agreement_counts_false_passes_over_every_checked_candidate(settings):
    from services.shadow.judging import field_agreement
    from services.store.models import Decision

    checks = {
        "c1": {"field": "pass", "closed_loop": "pass", "candidate": 80, "champion": 60},
        "c2": {"field": "pass", "closed_loop": "fail", "candidate": 50, "champion": 60},
        "c3": {
            "field": "inconclusive",
            "closed_loop": "inconclusive",
            "candidate": 64,
            "champion": 60,
        },
        "c4": {"field": "pass", "closed_loop": "inconclusive", "candidate": 60, "champion": 60},
    }
    for candidate in checks:
        add_candidate(settings.db_url, candidate, version=candidate[1:], status="passed")
    with session_scope(settings.db_url, write=True) as session:
        for candidate, check in checks.items():
            details = {"field_check": {"pick-place": {**check, "n": 100}}}
            session.add(
                Decision(
                    candidate_id=candidate, kind="gate", verdict="x", actor="gate", details=details
                )
            )
        session.add(Decision(candidate_id="c1", kind="approval", verdict="approved", actor="f"))
    found = field_agreement(settings)
    assert (found["n"], found["agree"], found["field_pass"]) == (4, 2, 3)
    assert found["false_pass_closed_loop_fail"] == 1  # c2
    assert found["false_pass_not_better"] == 2  # c2, and c4 (60 against 60)
