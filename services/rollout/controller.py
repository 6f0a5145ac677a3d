"""Rolling an approved candidate out to the fleet in stages, and the champion ledger.

A rollout moves through its plan's stages (``plan.py``): at each stage but the last, some
robots run the candidate and the rest stay on the champion as the control group. The
controller (``step_rollout``) looks at the robots' heartbeats window by window and runs a
sequential test per watched metric (``sequential.py``) by the rule of ``rule.py``: a breach
rolls the candidate back on its own; every test accepting "not worse" moves to the next
stage, once the heartbeat counts agree with the ingested episodes (``counts.py``); a stage
undecided at its cap pauses for a fleet manager (``manager.py``). A safety report from a
candidate robot halts it (``guardrails.py``). The last stage makes the candidate champion.

The promotion ledger (``registry/ledger.py``) is the record of who is champion; the last stage
changes it by compare-and-set, in the same transaction as the fleet's assignments. Every
transition is one transaction, so a controller killed at any point resumes from the stored
stage, and the compare-and-set rules out a double promotion. The MLflow ``champion`` alias
moves only after the ledger commits, and ``reconcile_champion`` (``champion.py``) repairs
the alias if a crash fell between the two writes. The stages are typed (``stages.py``) and
stored on the Rollout row as JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.config import Settings
from services.registry.ledger import PromotionConflict, lock_champion, promote
from services.rollout.champion import reconcile_champion
from services.rollout.counts import check_counts, mismatch_reason
from services.rollout.guardrails import halt_for_safety, safety_report
from services.rollout.plan import RolloutPlan
from services.rollout.rule import ADVANCE, EMPTY, PAUSE, ROLLBACK, capped, judge
from services.rollout.spec import METRICS
from services.rollout.stages import Stage, stages_of, store_stages
from services.rollout.transitions import (
    enter_stage,
    in_progress,
    move_robots,
    pause,
    return_to_champion,
)
from services.serving.assignments import fleet
from services.store import record_audit, session_scope
from services.store.models import Candidate, Decision, Heartbeat, Rollout, utcnow

CONTROLLER = "rollout-controller"


class RolloutError(Exception):
    """The rollout cannot start or change in the state it is in."""


def start_rollout(
    settings: Settings, candidate_id: str, *, actor: str, plan: RolloutPlan | None = None
) -> Rollout:
    """Start rolling an approved candidate out: its first stage's robots switch to it.

    Idempotent: a candidate that already has a rollout gets that one back. The first policy
    (no champion to compare with) goes to the whole fleet at once.
    """
    plan = plan or RolloutPlan.from_settings(settings)
    with session_scope(settings.db_url, write=True) as session:
        champion = lock_champion(session=session)
        candidate = session.get(Candidate, candidate_id)
        if candidate is None:
            raise LookupError(f"unknown candidate {candidate_id}")
        existing = session.scalar(select(Rollout).where(Rollout.candidate_id == candidate_id))
        if existing is not None:
            return existing
        if candidate.status != "approved":
            raise RolloutError(
                f"candidate {candidate_id} is {candidate.status}: only an approved candidate "
                "rolls out"
            )
        running = in_progress(session)
        if running is not None:
            raise RolloutError(
                f"rollout {running.id} of model {running.to_version} is still in progress: "
                "let it finish or halt it first"
            )
        # The candidate was evaluated against its parent: only that champion may be replaced.
        if candidate.parent_version != champion:
            raise PromotionConflict(
                f"candidate {candidate_id} was evaluated against {candidate.parent_version}, "
                f"but the champion is {champion}: evaluate it against the champion first"
            )
        if champion is not None and _judged_on_field_evidence(session, candidate_id):
            plan = plan.with_canary(settings.shadow.canary_share)
        robots = [r.id for r in fleet(session=session)]
        stages = plan.stages(candidate.model_version, robots) if champion is not None else []
        # A stage with every robot on the candidate leaves no control group: only the last
        # stage may, and it is the promotion itself.
        stages = [s for s in stages if s.is_last or len(s.robots) < len(robots)]
        if not stages:
            stages = RolloutPlan.of((1.0,)).stages(candidate.model_version, robots)
        rollout = Rollout(
            candidate_id=candidate_id,
            from_version=champion,
            to_version=candidate.model_version,
            stages=[s.to_json() for s in stages],
            current_stage=0,
            state="in_progress",
            reason=f"approved candidate {candidate_id}",
        )
        session.add(rollout)
        session.flush()
        record_audit(
            session,
            actor=actor,
            action="start-rollout",
            subject_type="rollout",
            subject_id=str(rollout.id),
            after={"stages": [(s.name, len(s.robots)) for s in stages]},
            reason=rollout.reason,
        )
        enter_stage(session, rollout, 0, actor=actor)
    reconcile_champion(settings)
    return rollout


def step_rollout(settings: Settings, *, actor: str = CONTROLLER) -> dict[str, Any] | None:
    """One decision window of the rollout under way; None if there is none.

    Reads the heartbeats since the previous window and halts on a safety report from a
    candidate robot, or counts the window into each watched metric's test and rolls back,
    moves to the next stage (once the episode counts check out), pauses for a fleet manager,
    or waits for more exposure (``rule.py``). A paused rollout is left alone. Returns the
    window record.
    """
    # A controller that died between a promotion and the alias move repairs it first.
    reconcile_champion(settings)
    with session_scope(settings.db_url, write=True) as session:
        lock_champion(session=session)
        rollout = in_progress(session)
        if rollout is None:
            return None
        stages = stages_of(rollout)
        stage = stages[rollout.current_stage]
        record: dict[str, Any] = {"rollout": rollout.id, "stage": stage.name}
        treatment, control, safety, cursor = _window(session, rollout, stage)
        if safety:  # paused or not: a guardrail does not wait for a fleet manager
            halt_for_safety(session, rollout, reports=safety)
            return {**record, "decision": "halt", "reason": rollout.reason}
        if rollout.state == "paused":
            return {**record, "decision": "paused", "reason": rollout.reason}
        hours = _hours_since(stage.started_at)
        if treatment["episodes"] == 0 and control["episodes"] == 0 and not capped(stage, hours):
            return {**record, "decision": "no new data"}
        judged = judge(stage, treatment, control, hours=hours)
        decision, reason, cause, stage = judged.decision, judged.reason, judged.cause, judged.stage
        if decision == ADVANCE:
            stage = stage.with_(
                counts=check_counts(
                    session,
                    version=rollout.to_version,
                    robots=stage.robots,
                    tolerance=settings.rollout.count_tolerance,
                    slack=settings.rollout.count_slack,
                )
            )
            if stage.counts["mismatched"] and not stage.counts_accepted:
                decision, reason, cause = PAUSE, mismatch_reason(stage.counts), "count-mismatch"
                record_audit(
                    session,
                    actor=actor,
                    action="count-mismatch",
                    subject_type="rollout",
                    subject_id=str(rollout.id),
                    before=None,
                    after=stage.counts,
                    reason=reason,
                )
        window = {
            "at": utcnow().isoformat(),
            "treatment": treatment,
            "control": control,
            "llr": dict(stage.llr),
            "decision": decision,
        }
        stage = stage.with_(windows=(*stage.windows, window), cursor=cursor)
        stages[rollout.current_stage] = stage
        store_stages(rollout, stages)
        if decision == ROLLBACK:
            reason = "; ".join(_breach_reason(m, stage) for m in judged.worse)
            return_to_champion(
                session, rollout, "rolled_back", actor=actor, reason=reason, action="rollback"
            )
        elif decision == PAUSE:
            pause(session, rollout, actor=actor, reason=reason, cause=cause)
        elif decision == ADVANCE:
            stages[rollout.current_stage] = stage.with_(outcome="passed")
            store_stages(rollout, stages)
            enter_stage(session, rollout, rollout.current_stage + 1, actor=actor)
        record |= window if reason is None else {**window, "reason": reason}
    reconcile_champion(settings)
    return record


def halt_rollout(settings: Settings, *, actor: str, reason: str) -> Rollout:
    """Halt the rollout under way (in progress or paused) and return its robots to the
    champion, by hand."""
    if not reason or not reason.strip():
        raise ValueError("halting a rollout needs a reason")
    with session_scope(settings.db_url, write=True) as session:
        lock_champion(session=session)
        rollout = in_progress(session)
        if rollout is None:
            raise RolloutError("no rollout is in progress: nothing to halt, nothing changed")
        return_to_champion(
            session, rollout, "halted", actor=actor, reason=reason, action="halt-rollout"
        )
    reconcile_champion(settings)
    return rollout


def _window(
    session: Session, rollout: Rollout, stage: Stage
) -> tuple[dict[str, float], dict[str, float], list[dict[str, Any]], int]:
    """Sums of the heartbeats after the stage's cursor: candidate robots, champion robots;
    and the safety reports among the candidate's."""
    cursor = stage.cursor or 0
    rows = session.execute(
        select(
            Heartbeat.policy_version,
            func.max(Heartbeat.id),
            func.coalesce(func.sum(Heartbeat.episodes), 0),
            func.coalesce(func.sum(Heartbeat.failures), 0),
            func.coalesce(func.sum(Heartbeat.interventions), 0),
            func.coalesce(func.sum(Heartbeat.active_seconds), 0.0),
        )
        .where(Heartbeat.id > cursor)
        .group_by(Heartbeat.policy_version)
    ).all()
    groups = {}
    newest = cursor
    for version, last, episodes, failures, interventions, seconds in rows:
        newest = max(newest, last)
        groups[version] = {
            "episodes": int(episodes),
            "failures": int(failures),
            "interventions": int(interventions),
            "hours": float(seconds) / 3600,
        }
    safety = session.scalars(
        select(Heartbeat).where(
            Heartbeat.id > cursor,
            Heartbeat.policy_version == rollout.to_version,
            (Heartbeat.safety_events > 0) | Heartbeat.emergency_stop,
        )
    ).all()
    return (
        groups.get(rollout.to_version, dict(EMPTY)),
        groups.get(rollout.from_version, dict(EMPTY)),
        [safety_report(h) for h in safety],
        newest,
    )


def _breach_reason(metric: str, stage: Stage) -> str:
    t = {k: sum(w["treatment"][k] for w in stage.windows) for k in ("episodes", "hours", metric)}
    c = {k: sum(w["control"][k] for w in stage.windows) for k in ("episodes", "hours", metric)}
    exposure = METRICS[metric]
    unit = "per episode" if exposure == "episodes" else "per robot-hour"
    test = stage.plan.tests[metric]
    return (
        f"{metric} {unit}: candidate {t[metric] / max(t[exposure], 1e-9):.2f} vs champion "
        f"{c[metric] / max(c[exposure], 1e-9):.2f} at the {stage.name} stage; SPRT "
        f"log-likelihood ratio {stage.llr[metric]:.2f} >= {test.upper:.2f} (alpha "
        f"{test.alpha}) after {len(stage.windows)} window(s)"
    )


def _hours_since(started_at: str | None) -> float:
    if started_at is None:
        return 0.0
    return (utcnow() - datetime.fromisoformat(started_at)).total_seconds() / 3600


def rollback(settings: Settings, *, actor: str, reason: str) -> Rollout:
    """Return the fleet and the champion to the version before the last rollout."""
    if not reason.strip():
        raise ValueError("a rollback needs a reason")
    with session_scope(settings.db_url, write=True) as session:
        last = session.scalar(
            select(Rollout).where(Rollout.state == "completed").order_by(Rollout.id.desc()).limit(1)
        )
        if last is None or last.from_version is None:
            raise RolloutError("nothing to roll back: no rollout replaced an earlier champion")
        promote(
            session=session,
            expected=last.to_version,
            new=last.from_version,
            candidate_id=last.candidate_id,
            actor=actor,
            reason=reason,
            kind="rollback",
        )
        last.state = "rolled_back"
        last.reason = reason
        move_robots(
            session,
            last,
            robots=[r.id for r in fleet(session=session)],
            version=last.from_version,
            candidate_status="rolled_back",
            actor=actor,
            assign_reason=reason,
            action="rollback",
            before={"champion": last.to_version},
            after={"champion": last.from_version},
            reason=reason,
        )
    reconcile_champion(settings)
    return last


def _judged_on_field_evidence(session: Session, candidate_id: str) -> bool:
    """Whether the candidate's gate verdict rests on field evidence for some task."""
    gate = session.scalar(
        select(Decision).where(Decision.candidate_id == candidate_id, Decision.kind == "gate")
    )
    return gate is not None and bool((gate.details or {}).get("evidence", {}).get("field"))
