"""What a reviewer sees: candidates, the evidence behind each verdict, and the audit log.

Plain read functions over a session, shared by the CLI, the API and the web app, so all
three show the same numbers. (``find_candidate``, the lookup by model version or id, lives
with the decisions that also need it.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.approval.decisions import find_candidate
from services.config import Settings
from services.errors import NotFound
from services.evaluation.stats import wilson
from services.evaluation.trajectories import read_trajectory, trajectory_path, video_path
from services.readmodel.lineage import lineage_of_model
from services.store.models import AuditEvent, Candidate, Decision, Evaluation, EvaluationEpisode


def candidate_summaries(session: Session) -> list[dict[str, Any]]:
    """Every candidate, oldest first, with its gate verdict and approval."""
    decisions: dict[str, dict[str, Decision]] = {}
    for d in session.scalars(select(Decision).where(Decision.kind.in_(("gate", "approval")))):
        decisions.setdefault(d.candidate_id, {})[d.kind] = d
    rows = []
    for c in session.scalars(select(Candidate).order_by(Candidate.created_at, Candidate.id)):
        gate = decisions.get(c.id, {}).get("gate")
        approval = decisions.get(c.id, {}).get("approval")
        rows.append(
            {
                "id": c.id,
                "model_version": c.model_version,
                "parent_version": c.parent_version,
                "dataset_id": c.dataset_id,
                "policy": c.policy,
                "status": c.status,
                "gate": gate.verdict if gate else None,
                "gate_reason": gate.reason if gate else None,
                "approval": approval.verdict if approval else None,
                "approved_by": approval.actor if approval else None,
                "created_at": c.created_at,
            }
        )
    return rows


def candidate_detail(session: Session, ref: str, *, failures: int = 50) -> dict[str, Any]:
    """One candidate: per-task results against the champion, the gate's numbers, lineage,
    decisions and comments, and its failing evaluation episodes."""
    candidate = find_candidate(session, ref)
    evaluations = session.scalars(
        select(Evaluation).where(Evaluation.candidate_id == candidate.id).order_by(Evaluation.task)
    ).all()
    decisions = session.scalars(
        select(Decision).where(Decision.candidate_id == candidate.id).order_by(Decision.id)
    ).all()
    gate = next((d for d in decisions if d.kind == "gate"), None)
    task_numbers = (gate.details or {}).get("tasks", {}) if gate else {}
    tasks = [
        _task_row(e, task_numbers.get(e.task, {}).get("difference_lower_bound"))
        for e in evaluations
    ]
    lineage = (
        lineage_of_model(session, candidate.model_version)["chain"][0]
        if candidate.model_version
        else None
    )
    if lineage is not None:
        lineage = {k: v for k, v in lineage.items() if k != "episode_ids"}
    return {
        "id": candidate.id,
        "model_version": candidate.model_version,
        "parent_version": candidate.parent_version,
        "dataset_id": candidate.dataset_id,
        "policy": candidate.policy,
        "status": candidate.status,
        "mlflow_run_id": candidate.mlflow_run_id,
        "flow_run_id": candidate.flow_run_id,
        "code_version": candidate.code_version,
        "train_seconds": candidate.train_seconds,
        "final_loss": candidate.final_loss,
        "created_at": candidate.created_at,
        "champion_version": evaluations[0].champion_version if evaluations else None,
        "tasks": tasks,
        "offline": _offline_metrics(evaluations),
        "gate": (
            {"verdict": gate.verdict, "reason": gate.reason, "numbers": gate.details}
            if gate
            else None
        ),
        "decisions": [
            {
                "kind": d.kind,
                "verdict": d.verdict,
                "actor": d.actor,
                "reason": d.reason,
                "at": d.created_at,
            }
            for d in decisions
            if d.kind != "gate"
        ],
        "lineage": lineage,
        "failing_episodes": _failing_episodes(session, candidate, evaluations, failures),
    }


def audit_log(
    session: Session, *, subject_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Audit rows, newest first."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if subject_id is not None:
        query = query.where(AuditEvent.subject_id == subject_id)
    return [
        {
            "id": a.id,
            "at": a.at,
            "actor": a.actor,
            "action": a.action,
            "subject_type": a.subject_type,
            "subject_id": a.subject_id,
            "before": a.before,
            "after": a.after,
            "reason": a.reason,
        }
        for a in session.scalars(query)
    ]


def _rate(k: int | None, n: int) -> dict[str, Any] | None:
    if k is None:
        return None
    rate = wilson(k, n)
    return {"successes": k, "n": n, "rate": rate.value, "ci": [rate.low, rate.high]}


def _task_row(e: Evaluation, lower_bound: float | None) -> dict[str, Any]:
    candidate = _rate(e.candidate_successes, e.n)
    champion = _rate(e.champion_successes, e.n)
    return {
        "task": e.task,
        "suite": e.suite,
        "candidate": candidate,
        "champion": champion,
        "difference": candidate["rate"] - champion["rate"] if champion else None,
        "difference_lower_bound": lower_bound,
        "candidate_only": e.candidate_only,
        "champion_only": e.champion_only,
    }


def _offline_metrics(evaluations) -> dict[str, Any]:
    return {e.task: e.metrics["offline"] for e in evaluations if e.metrics.get("offline")}


def _failing_episodes(
    session: Session, candidate: Candidate, evaluations, limit: int
) -> list[dict[str, Any]]:
    if candidate.model_version is None or not evaluations:
        return []
    suite = evaluations[0].suite
    champion = evaluations[0].champion_version
    failed = session.scalars(
        select(EvaluationEpisode)
        .where(
            EvaluationEpisode.model_version == candidate.model_version,
            EvaluationEpisode.suite == suite,
            EvaluationEpisode.success.is_(False),
        )
        .order_by(EvaluationEpisode.task, EvaluationEpisode.seed)
        .limit(limit)
    ).all()
    champion_success = {}
    if champion is not None:
        champion_success = {
            (e.task, e.seed): e.success
            for e in session.scalars(
                select(EvaluationEpisode).where(
                    EvaluationEpisode.model_version == champion, EvaluationEpisode.suite == suite
                )
            )
        }
    return [
        {
            "id": e.id,
            "task": e.task,
            "seed": e.seed,
            "steps": e.steps,
            "final_reward": e.final_reward,
            "champion_succeeded": champion_success.get((e.task, e.seed)),
        }
        for e in failed
    ]


def evaluation_episode(
    session: Session, settings: Settings, ref: str, task: str, seed: int
) -> dict[str, Any]:
    """One evaluation episode of a candidate with its trajectory, and the champion's episode
    on the same seed next to it."""
    candidate = find_candidate(session, ref)
    evaluation = session.scalar(
        select(Evaluation).where(Evaluation.candidate_id == candidate.id, Evaluation.task == task)
    )
    if evaluation is None or candidate.model_version is None:
        raise NotFound(f"candidate {candidate.id} has no evaluation on task {task!r}")
    sides = {"candidate": candidate.model_version, "champion": evaluation.champion_version}
    answer: dict[str, Any] = {"candidate_id": candidate.id, "task": task, "seed": seed}
    for side, version in sides.items():
        row = (
            session.scalar(
                select(EvaluationEpisode).where(
                    EvaluationEpisode.model_version == version,
                    EvaluationEpisode.task == task,
                    EvaluationEpisode.seed == seed,
                    EvaluationEpisode.suite == evaluation.suite,
                )
            )
            if version is not None
            else None
        )
        if row is None:
            if side == "candidate":
                raise NotFound(f"no evaluation episode of {task!r} with seed {seed}")
            answer[side] = None
            continue
        path = trajectory_path(settings, row.suite, version, task, seed)
        answer[side] = {
            "model_version": version,
            "success": row.success,
            "steps": row.steps,
            "final_reward": row.final_reward,
            "trajectory": read_trajectory(path) if path.exists() else None,
            "video": video_path(settings, row.suite, version, task, seed).exists(),
        }
    return answer


def evaluation_video(
    session: Session, settings: Settings, ref: str, task: str, seed: int, side: str
) -> Path:
    """The recorded video of a candidate's (side "candidate") or its champion's (side
    "champion") evaluation episode on ``task`` and ``seed``; NotFound if none was recorded."""
    if side not in ("candidate", "champion"):
        raise NotFound(f"no side {side!r}: candidate or champion")
    candidate = find_candidate(session, ref)
    evaluation = session.scalar(
        select(Evaluation).where(Evaluation.candidate_id == candidate.id, Evaluation.task == task)
    )
    if evaluation is None or candidate.model_version is None:
        raise NotFound(f"candidate {candidate.id} has no evaluation on task {task!r}")
    version = candidate.model_version if side == "candidate" else evaluation.champion_version
    path = video_path(settings, evaluation.suite, version or "", task, seed)
    if version is None or not path.exists():
        raise NotFound(f"no video of the {side}'s episode of {task!r} with seed {seed}")
    return path
