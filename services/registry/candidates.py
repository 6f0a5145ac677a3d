"""Candidates in the registry: their identity, their registration, their summaries.

A candidate's id is derived from what defines it (dataset, parent, training config, code), so
re-running a night finds the candidate it already trained and registers no duplicate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from services.config import Settings
from services.registry.mlflow_registry import register_candidate
from services.store import record_audit, session_scope
from services.store.models import Candidate


@dataclass(frozen=True)
class CandidateSummary:
    id: str
    model_version: str
    parent_version: str | None
    dataset_id: str
    final_loss: float | None
    train_seconds: float | None
    # False when the candidate already existed and nothing was trained.
    trained: bool


def candidate_id_for(dataset_id: str, parent_version: str | None, training: dict, code: str) -> str:
    """``training``: what defines the training run (``TrainConfig.identity()``)."""
    payload = json.dumps(
        {"dataset": dataset_id, "parent": parent_version, "config": training, "code": code},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def record_candidate(
    settings: Settings,
    *,
    candidate_id: str,
    dataset_id: str,
    parent_version: str | None,
    policy: str,
    checkpoint_dir: Path,
    params: dict,
    losses: list[tuple[int, float]],
    final_loss: float | None,
    train_seconds: float | None,
    code_version: str,
    flow_run_id: str | None,
) -> CandidateSummary:
    """Register the trained checkpoint as a model version in MLflow and record the candidate
    (and an audit entry) in the store."""
    registered = register_candidate(
        settings,
        checkpoint_dir=checkpoint_dir,
        candidate_id=candidate_id,
        dataset_id=dataset_id,
        parent_version=parent_version,
        flow_run_id=flow_run_id,
        code_version=code_version,
        params=params,
        losses=losses,
        manifest_path=settings.datasets_dir / dataset_id / "manifest.json",
    )
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id) or Candidate(id=candidate_id)
        candidate.model_name = settings.registry.model_name
        candidate.model_version = registered.version
        candidate.dataset_id = dataset_id
        candidate.parent_version = parent_version
        candidate.policy = policy
        candidate.mlflow_run_id = registered.run_id
        candidate.flow_run_id = flow_run_id
        candidate.code_version = code_version
        candidate.status = "registered"
        candidate.train_seconds = train_seconds
        candidate.final_loss = final_loss
        session.merge(candidate)
        record_audit(
            session,
            actor="train",
            action="register-candidate",
            subject_type="candidate",
            subject_id=candidate_id,
            after={
                "model_version": registered.version,
                "parent": parent_version,
                "dataset": dataset_id,
            },
        )
        return summary_of(candidate, trained=True)


def candidate_summary(settings: Settings, candidate_id: str) -> CandidateSummary:
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None:
            raise LookupError(f"unknown candidate {candidate_id}")
        return summary_of(candidate, trained=True)


def summary_of(candidate: Candidate, *, trained: bool) -> CandidateSummary:
    return CandidateSummary(
        id=candidate.id,
        model_version=candidate.model_version,
        parent_version=candidate.parent_version,
        dataset_id=candidate.dataset_id,
        final_loss=candidate.final_loss,
        train_seconds=candidate.train_seconds,
        trained=trained,
    )
