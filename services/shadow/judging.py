"""A night and its field evidence: shadow a new candidate, and judge it once the fleet has
worked beside it.

A candidate of a fleet with field tasks (``FLYWHEEL_FIELD_TASKS``) cannot be judged the night
it is trained: its evidence is the next shift's. So the night that trains it evaluates what
a twin can (the other tasks, closed loop), starts its shadow run and marks it ``shadowing``;
the next night, once the shift's episodes are ingested, judges it on both (``combine``) and
ends the shadow run. A night with too few shadow episodes waits for the next shift, up to
``FLYWHEEL_SHADOW_MAX_NIGHTS``; then it judges on what there is.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

from services.config import Settings
from services.evaluation.closed_loop import TaskEvaluation
from services.evaluation.gate import GateVerdict, judge
from services.registry.ledger import champion_of
from services.shadow.field_gate import FieldThresholds, combine, current_thresholds, judge_field
from services.shadow.report import ReportConfig, collect, summarise
from services.shadow.runs import end_shadow, running_shadow, shadow_of, start_shadow
from services.store import record_audit, session_scope
from services.store.models import Candidate, Decision, NightlyRun, ShadowRun

SHADOWING = "shadowing"


def report_config(settings: Settings) -> ReportConfig:
    s = settings.shadow
    return ReportConfig(tolerance=s.tolerance, pre_takeover_s=s.pre_takeover_s)


def needs_field_evidence(settings: Settings, candidate_id: str) -> bool:
    """Whether the candidate, not judged yet, has field tasks to be judged on and a champion
    to shadow (the first policy has none: it passes as the closed-loop gate passes it)."""
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        return (
            bool(settings.field_tasks)
            and candidate.parent_version is not None
            and candidate.status == "registered"
        )


def shadow_candidate_tonight(settings: Settings, candidate_id: str, actor: str) -> ShadowRun:
    """Start the candidate's shadow run; it waits, ``shadowing``, for the next shift."""
    with session_scope(settings.db_url, write=True) as session:
        run = start_shadow(
            session=session,
            candidate_id=candidate_id,
            actor=actor,
            reason=f"field evidence for {', '.join(settings.field_tasks)}",
        )
        candidate = session.get(Candidate, candidate_id)
        if candidate.status == "registered":
            candidate.status = SHADOWING
        session.expunge(run)
        return run


def waiting_shadow(settings: Settings, actor: str) -> ShadowRun | None:
    """The shadow run of a candidate waiting to be judged on field evidence (or judged by a
    night that died before it ended the run), if any. One whose champion is no longer the
    champion is ended (the candidate must be trained from the new one) and None returned."""
    with session_scope(settings.db_url, write=True) as session:
        run = running_shadow(session=session)
        if run is None:
            return None
        candidate = session.get(Candidate, run.candidate_id)
        judged = session.scalar(
            select(Decision.id).where(
                Decision.candidate_id == candidate.id, Decision.kind == "gate"
            )
        )
        if candidate.status != SHADOWING and judged is None:
            return None  # a shadow run a fleet manager started by hand: not the nights'
        if judged is not None:  # judged by a night that died before it ended the run
            session.expunge(run)
            return run
        champion = champion_of(session=session)
        if run.champion_version != champion:
            end_shadow(
                session=session,
                run=run,
                actor=actor,
                reason=f"the champion is now {champion}, not {run.champion_version}",
            )
            candidate.status = "superseded"
            record_audit(
                session,
                actor=actor,
                action="supersede",
                subject_type="candidate",
                subject_id=candidate.id,
                before={"status": SHADOWING},
                after={"status": "superseded"},
                reason=f"shadowed beside {run.champion_version}; the champion is {champion}",
            )
            return None
        session.expunge(run)
        return run


def judge_shadow(
    settings: Settings,
    run: ShadowRun,
    evaluations: list[TaskEvaluation],
    *,
    night_started: datetime,
    actor: str,
) -> tuple[GateVerdict | None, str]:
    """The candidate's verdict on its closed-loop ``evaluations`` (twin tasks) and its shadow
    evidence (field tasks), or (None, why it waits) when the shift brought too little. A
    candidate already judged (by a night that died before it ended the run) keeps its
    verdict."""
    with session_scope(settings.db_url) as session:
        stored = session.scalar(
            select(Decision).where(
                Decision.candidate_id == run.candidate_id, Decision.kind == "gate"
            )
        )
        if stored is not None:
            return GateVerdict(stored.verdict, stored.reason or "", stored.details), "judged"
    config = report_config(settings)
    evidence = collect(settings, run, config)
    with session_scope(settings.db_url) as session:
        row = current_thresholds(session=session, before=night_started)
        waited = session.scalar(
            select(func.count(NightlyRun.id)).where(NightlyRun.started_at > run.started_at)
        )
        thresholds = FieldThresholds.from_json(row.thresholds) if row is not None else None
        version = row.version if row is not None else None
    tasks = settings.field_tasks
    needed = thresholds.min_episodes if thresholds else settings.shadow.min_episodes
    found = {t: evidence.tasks[t].episodes if t in evidence.tasks else 0 for t in tasks}
    short = {t: n for t, n in found.items() if n < needed}
    if short and waited < settings.shadow.max_nights:
        return None, (
            f"shadowing: {', '.join(f'{t} {n}/{needed}' for t, n in short.items())} shadow "
            f"episodes after {waited} of at most {settings.shadow.max_nights} nights"
        )
    field = judge_field(evidence, tasks, thresholds, version)
    field.numbers["report"] = summarise(evidence, config)
    field.numbers["offline"] = _offline(settings, run)
    closed = judge(evaluations) if evaluations else None
    verdict = combine(closed, field, tasks, settings.twin_tasks)
    verdict.numbers["field_check"] = _field_check(evidence, evaluations, thresholds, version)
    return verdict, "judged"


def close_shadow(settings: Settings, run: ShadowRun, verdict: GateVerdict, actor: str) -> None:
    """End a judged candidate's shadow run, once its verdict is stored (a night that dies in
    between finds the run still running and the candidate judged, and closes it then)."""
    with session_scope(settings.db_url, write=True) as session:
        stored = session.get(ShadowRun, run.id)
        end_shadow(session=session, run=stored, actor=actor, reason=f"judged: {verdict.verdict}")


def _field_check(evidence, evaluations, thresholds, version) -> dict[str, dict]:
    """Per task that has a twin and shadow evidence: the field verdict it would have had
    without a twin, beside the closed-loop verdict on that task alone. Not used to decide:
    kept so that how far field evidence can be trusted is measured on every such night
    (``field_agreement``)."""
    check = {}
    for evaluation in evaluations:
        if evaluation.task not in evidence.tasks:
            continue
        field = judge_field(evidence, [evaluation.task], thresholds, version)
        check[evaluation.task] = {
            "field": field.verdict,
            "closed_loop": judge([evaluation]).verdict,
            "candidate": evaluation.candidate.successes,
            "champion": evaluation.champion.successes if evaluation.champion else None,
            "n": evaluation.candidate.n,
        }
    return check


def field_agreement(settings: Settings) -> dict:
    """Over every candidate judged with field evidence: on twin tasks, how often the field
    verdict equals the closed-loop one, and how often it passed what the closed loop failed
    or did not find better."""
    with session_scope(settings.db_url) as session:
        gates = session.scalars(select(Decision).where(Decision.kind == "gate")).all()
        checks = [
            {"candidate_id": g.candidate_id, "task": task, **c}
            for g in gates
            for task, c in ((g.details or {}).get("field_check") or {}).items()
        ]
    field_pass = [c for c in checks if c["field"] == "pass"]
    return {
        "checks": checks,
        "n": len(checks),
        "agree": sum(c["field"] == c["closed_loop"] for c in checks),
        "field_pass": len(field_pass),
        "false_pass_closed_loop_fail": sum(c["closed_loop"] == "fail" for c in field_pass),
        "false_pass_not_better": sum(
            c["champion"] is not None and c["candidate"] <= c["champion"] for c in field_pass
        ),
    }


def _offline(settings: Settings, run: ShadowRun) -> dict[str, dict]:
    """The offline action error of candidate and champion on the field tasks' held-out
    operator steps (shown beside the shadow evidence; the thresholds do not use it)."""
    from services.evaluation.offline import action_errors
    from services.registry.mlflow_registry import policy_checkpoint

    checkpoints = {"candidate": policy_checkpoint(settings, run.version)}
    if run.champion_version is not None:
        checkpoints["champion"] = policy_checkpoint(settings, run.champion_version)
    errors = action_errors(checkpoints, settings)
    return {task: errors[task] for task in settings.field_tasks if task in errors}


def candidate_shadow(settings: Settings, candidate_id: str) -> dict | None:
    """The candidate's shadow report: the one its field verdict was judged on, or, while
    its shadow run goes on (or for a run ended without a verdict), what the log holds so
    far. None if it never ran as a shadow."""
    with session_scope(settings.db_url) as session:
        run = shadow_of(session=session, candidate_id=candidate_id)
        if run is None:
            return None
        gate = session.scalar(
            select(Decision).where(Decision.candidate_id == candidate_id, Decision.kind == "gate")
        )
        judged = ((gate.details or {}).get("field") or {}) if gate is not None else {}
        session.expunge(run)
    state = {"shadow_run": run.id, "state": run.state, "started_at": run.started_at.isoformat()}
    if judged.get("report"):
        return {**state, "judged": True, "field": judged, **judged["report"]}
    config = report_config(settings)
    return {**state, "judged": False, **summarise(collect(settings, run, config), config)}
