"""The train stage: fine-tune the champion on a dataset and register the result as a candidate.

A candidate's id is derived from what defines it (dataset, parent, training config, code), so
re-running a night finds the candidate it already trained and registers no duplicate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from services.config import Settings
from services.store import record_audit, session_scope
from services.store.models import Candidate, Dataset
from services.training.config import TrainConfig


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


def candidate_id_for(
    dataset_id: str, parent_version: str | None, config: TrainConfig, code: str
) -> str:
    # resume/overwrite say how to run, not what is trained: they do not change the identity.
    identity = {k: v for k, v in asdict(config).items() if k not in ("resume", "overwrite")}
    payload = json.dumps(
        {"dataset": dataset_id, "parent": parent_version, "config": identity, "code": code},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def train_and_register(
    settings: Settings,
    *,
    dataset_id: str,
    config: TrainConfig | None = None,
    flow_run_id: str | None = None,
) -> CandidateSummary:
    """Fine-tune the ledger's champion (or train the first policy) on ``dataset_id``."""
    from services.registry.mlflow_registry import (
        code_version,
        policy_checkpoint,
        register_candidate,
    )
    from services.registry.ledger import champion_of
    from services.training.ray_job import train

    config = config or TrainConfig()
    code = code_version()
    with session_scope(settings.db_url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise LookupError(
                f"unknown dataset {dataset_id}: build it with `flywheel dataset build`"
            )
        parent = champion_of(session=session)
        candidate_id = candidate_id_for(dataset_id, parent, config, code)
        existing = session.get(Candidate, candidate_id)
        if existing is not None and existing.model_version is not None and not config.overwrite:
            return _summary(existing, trained=False)
        manifest_path = settings.datasets_dir / dataset_id / "manifest.json"

    parent_checkpoint = policy_checkpoint(settings, parent) if parent else None
    result = train(
        settings,
        candidate_id=candidate_id,
        dataset_id=dataset_id,
        parent_checkpoint=parent_checkpoint,
        config=config,
    )
    registered = register_candidate(
        settings,
        checkpoint_dir=result.checkpoint_dir,
        candidate_id=candidate_id,
        dataset_id=dataset_id,
        parent_version=parent,
        flow_run_id=flow_run_id,
        code_version=code,
        params={**asdict(config), "n_steps": result.samples, "tasks": ",".join(result.tasks)},
        losses=result.losses,
        manifest_path=manifest_path,
    )
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id) or Candidate(id=candidate_id)
        candidate.model_name = settings.model_name
        candidate.model_version = registered.version
        candidate.dataset_id = dataset_id
        candidate.parent_version = parent
        candidate.policy = config.policy
        candidate.mlflow_run_id = registered.run_id
        candidate.flow_run_id = flow_run_id
        candidate.code_version = code
        candidate.status = "registered"
        candidate.train_seconds = result.seconds
        candidate.final_loss = result.final_loss
        session.merge(candidate)
        record_audit(
            session,
            actor="train",
            action="register-candidate",
            subject_type="candidate",
            subject_id=candidate_id,
            after={"model_version": registered.version, "parent": parent, "dataset": dataset_id},
        )
        return _summary(candidate, trained=True)


def candidate_summary(settings: Settings, candidate_id: str) -> CandidateSummary:
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None:
            raise LookupError(f"unknown candidate {candidate_id}")
        return _summary(candidate, trained=True)


def _summary(candidate: Candidate, *, trained: bool) -> CandidateSummary:
    return CandidateSummary(
        id=candidate.id,
        model_version=candidate.model_version,
        parent_version=candidate.parent_version,
        dataset_id=candidate.dataset_id,
        final_loss=candidate.final_loss,
        train_seconds=candidate.train_seconds,
        trained=trained,
    )
