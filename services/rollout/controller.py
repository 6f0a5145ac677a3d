"""Rolling an approved candidate out to the fleet in stages, and the champion ledger.

A rollout moves through its plan's stages (``plan.py``): at each stage but the last, some
robots run the candidate and the rest stay on the champion as the control group. The
controller (``step_rollout``) looks at the robots' heartbeats window by window and runs a
sequential test per watched metric (``sequential.py``): a breach rolls the candidate back
on its own; enough exposure without one moves to the next stage. The last stage makes the
candidate champion.

The promotion ledger (``registry/ledger.py``) is the record of who is champion; the last stage
changes it by compare-and-set, in the same transaction as the fleet's assignments. Every
transition is one transaction, so a controller killed at any point resumes from the stored
stage, and the compare-and-set rules out a double promotion. The MLflow ``champion`` alias
moves only after the ledger commits, and ``reconcile_champion`` (``champion.py``) repairs
the alias if a crash fell between the two writes. The stages are typed (``stages.py``) and
stored on the Rollout row as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.config import Settings
from services.registry.ledger import PromotionConflict, champion_of, lock_champion, promote
from services.rollout.champion import reconcile_champion
from services.rollout.plan import METRICS, RolloutPlan
from services.rollout.stages import Stage, stages_of, store_stages
from services.serving.assignments import assign, fleet
from services.store import record_audit, session_scope
from services.store.models import Candidate, Heartbeat, Rollout, utcnow

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
        robots = [r.id for r in fleet(session=session)]
        stages = plan.stages(candidate.model_version, robots) if champion is not None else []
        # A stage with every robot on the candidate leaves no control group: only the last
        # stage may, and it is the promotion itself.
        stages = [s for s in stages if s.is_last or len(s.robots) < len(robots)]
        if not stages:
            stages = RolloutPlan(shares=(1.0,)).stages(candidate.model_version, robots)
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
        _enter_stage(session, rollout, 0, actor=actor)
    reconcile_champion(settings)
    return rollout


def in_progress(session: Session) -> Rollout | None:
    return session.scalar(select(Rollout).where(Rollout.state == "in_progress"))


def step_rollout(settings: Settings, *, actor: str = CONTROLLER) -> dict[str, Any] | None:
    """One decision window of the rollout in progress; None if there is none.

    Reads the heartbeats since the previous window, updates each metric's test, and rolls
    back, moves to the next stage, or waits for more exposure. Returns the window record.
    """
    plan = RolloutPlan.from_settings(settings)
    # A controller that died between a promotion and the alias move repairs it first.
    reconcile_champion(settings)
    with session_scope(settings.db_url, write=True) as session:
        lock_champion(session=session)
        rollout = in_progress(session)
        if rollout is None:
            return None
        stages = stages_of(rollout)
        stage = stages[rollout.current_stage]
        treatment, control, cursor = _window(session, rollout, stage)
        if treatment["episodes"] == 0 and control["episodes"] == 0:
            return {"rollout": rollout.id, "stage": stage.name, "decision": "no new data"}
        window: dict[str, Any] = {
            "at": utcnow().isoformat(),
            "treatment": treatment,
            "control": control,
            "llr": {},
        }
        total = dict(stage.control_total or {"episodes": 0, "failures": 0})
        total["episodes"] += control["episodes"]
        total["failures"] += control["failures"]
        llr = dict(stage.llr)
        for metric in METRICS:
            llr[metric] += plan.window_llr(metric, treatment, control, total)
            window["llr"][metric] = llr[metric]
        episodes = stage.episodes + treatment["episodes"]
        breached = [m for m in METRICS if plan.breached(m, llr[m])]
        if breached:
            window["decision"] = "rollback"
        elif episodes >= plan.min_episodes:
            window["decision"] = "next stage"
        else:
            window["decision"] = "continue"
        stage = stage.with_(
            episodes=episodes,
            llr=llr,
            windows=(*stage.windows, window),
            cursor=cursor,
            control_total=total,
        )
        stages[rollout.current_stage] = stage
        store_stages(rollout, stages)
        record = {"rollout": rollout.id, "stage": stage.name, **window}
        if breached:
            reason = "; ".join(_breach_reason(m, stage, plan) for m in breached)
            _return_to_champion(session, rollout, "rolled_back", actor=actor, reason=reason)
        elif window["decision"] == "next stage":
            stages[rollout.current_stage] = stage.with_(outcome="passed")
            store_stages(rollout, stages)
            _enter_stage(session, rollout, rollout.current_stage + 1, actor=actor)
    reconcile_champion(settings)
    return record


def halt_rollout(settings: Settings, *, actor: str, reason: str) -> Rollout:
    """Halt the rollout in progress and return its robots to the champion, by hand."""
    if not reason or not reason.strip():
        raise ValueError("halting a rollout needs a reason")
    with session_scope(settings.db_url, write=True) as session:
        lock_champion(session=session)
        rollout = in_progress(session)
        if rollout is None:
            raise RolloutError("no rollout is in progress: nothing to halt, nothing changed")
        _return_to_champion(session, rollout, "halted", actor=actor, reason=reason)
    reconcile_champion(settings)
    return rollout


def _window(
    session: Session, rollout: Rollout, stage: Stage
) -> tuple[dict[str, float], dict[str, float], int]:
    """Sums of the heartbeats after the stage's cursor: candidate robots, champion robots."""
    cursor = stage.cursor or 0
    rows = session.execute(
        select(
            Heartbeat.policy_version,
            func.count(Heartbeat.id),
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
    for version, _, last, episodes, failures, interventions, seconds in rows:
        newest = max(newest, last)
        groups[version] = {
            "episodes": int(episodes),
            "failures": int(failures),
            "interventions": int(interventions),
            "hours": float(seconds) / 3600,
        }
    empty = {"episodes": 0, "failures": 0, "interventions": 0, "hours": 0.0}
    return (
        groups.get(rollout.to_version, empty),
        groups.get(rollout.from_version, empty),
        newest,
    )


def _breach_reason(metric: str, stage: Stage, plan: RolloutPlan) -> str:
    t = {k: sum(w["treatment"][k] for w in stage.windows) for k in ("episodes", "hours", metric)}
    c = {k: sum(w["control"][k] for w in stage.windows) for k in ("episodes", "hours", metric)}
    exposure = METRICS[metric]
    unit = "per episode" if exposure == "episodes" else "per robot-hour"
    return (
        f"{metric} {unit}: candidate {t[metric] / max(t[exposure], 1e-9):.2f} vs champion "
        f"{c[metric] / max(c[exposure], 1e-9):.2f} at the {stage.name} stage; SPRT "
        f"log-likelihood ratio {stage.llr[metric]:.2f} >= {plan.threshold(metric)} after "
        f"{len(stage.windows)} window(s)"
    )


def _enter_stage(session: Session, rollout: Rollout, index: int, *, actor: str) -> None:
    stages = stages_of(rollout)
    newest = session.scalar(select(func.max(Heartbeat.id))) or 0
    before = {"stage": stages[rollout.current_stage].name if index else None}
    stage = stages[index].with_(started_at=utcnow().isoformat(), cursor=newest)
    rollout.current_stage = index
    status = None
    if stage.is_last:
        promote(
            session=session,
            expected=rollout.from_version,
            new=rollout.to_version,
            candidate_id=rollout.candidate_id,
            actor=actor,
            reason=f"rollout {rollout.id} reached the whole fleet",
        )
        stage = stage.with_(robots=tuple(r.id for r in fleet(session=session)), outcome="completed")
        rollout.state = "completed"
        rollout.finished_at = utcnow()
        status = "deployed"
    stages[index] = stage
    store_stages(rollout, stages)
    _move_robots(
        session,
        rollout,
        robots=stage.robots,
        version=rollout.to_version,
        candidate_status=status,
        actor=actor,
        assign_reason=f"rollout {rollout.id}, {stage.name} stage",
        action="rollout-stage",
        before=before,
        after={
            "stage": stage.name,
            "robots": len(stage.robots),
            "champion": champion_of(session=session),
        },
        reason="champion on the whole fleet"
        if stage.is_last
        else f"{len(stage.robots)} robot(s) on {rollout.to_version}, the rest on the champion",
    )


def _return_to_champion(
    session: Session, rollout: Rollout, state: str, *, actor: str, reason: str
) -> None:
    stages = stages_of(rollout)
    stage = stages[rollout.current_stage]
    stages[rollout.current_stage] = stage.with_(outcome=state)
    store_stages(rollout, stages)
    robots = [r.id for r in fleet(session=session) if r.policy_version == rollout.to_version]
    rollout.state = state
    rollout.reason = reason
    rollout.finished_at = utcnow()
    _move_robots(
        session,
        rollout,
        robots=robots,
        version=rollout.from_version,
        candidate_status="rolled_back",
        actor=actor,
        assign_reason=f"rollout {rollout.id} {state.replace('_', ' ')}: {reason}",
        action="rollback" if state == "rolled_back" else "halt-rollout",
        before={"state": "in_progress", "stage": stage.name},
        after={"state": state, "robots_returned": len(robots), "champion": rollout.from_version},
        reason=reason,
    )


def _move_robots(
    session: Session,
    rollout: Rollout,
    *,
    robots: Sequence[str],
    version: str | None,
    candidate_status: str | None,
    actor: str,
    assign_reason: str,
    action: str,
    before: dict[str, Any],
    after: dict[str, Any],
    reason: str,
) -> None:
    """How every transition ends: point the robots at a version (each change audited), set
    the candidate's status, and audit the rollout's transition."""
    assign(session=session, robot_ids=robots, version=version, actor=actor, reason=assign_reason)
    if candidate_status is not None:
        session.get(Candidate, rollout.candidate_id).status = candidate_status
    record_audit(
        session,
        actor=actor,
        action=action,
        subject_type="rollout",
        subject_id=str(rollout.id),
        before=before,
        after=after,
        reason=reason,
    )


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
        _move_robots(
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
