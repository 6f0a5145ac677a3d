"""The train stage: fine-tune the champion on a dataset and register the result as a candidate.

The candidate's id comes from what defines it (services/registry/candidates.py), so a night
that runs again finds the candidate it already trained instead of training it twice.
"""

from __future__ import annotations

from dataclasses import asdict

from services.config import Settings
from services.registry.candidates import (
    CandidateSummary,
    candidate_id_for,
    record_candidate,
    summary_of,
)
from services.registry.ledger import champion_of
from services.registry.mlflow_registry import code_version, policy_checkpoint
from services.store import session_scope
from services.store.models import Candidate, Dataset
from services.training.config import TrainConfig
from services.training.ray_job import train


def train_and_register(
    settings: Settings,
    *,
    dataset_id: str,
    config: TrainConfig | None = None,
    flow_run_id: str | None = None,
) -> CandidateSummary:
    """Fine-tune the ledger's champion (or train the first policy) on ``dataset_id``."""
    config = config or TrainConfig()
    code = code_version()
    with session_scope(settings.db_url) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise LookupError(
                f"unknown dataset {dataset_id}: build it with `flywheel dataset build`"
            )
        parent = champion_of(session=session)
        candidate_id = candidate_id_for(dataset_id, parent, config.identity(), code)
        existing = session.get(Candidate, candidate_id)
        if existing is not None and existing.model_version is not None and not config.overwrite:
            return summary_of(existing, trained=False)

    parent_checkpoint = policy_checkpoint(settings, parent) if parent else None
    result = train(
        settings,
        candidate_id=candidate_id,
        dataset_id=dataset_id,
        parent_checkpoint=parent_checkpoint,
        config=config,
    )
    return record_candidate(
        settings,
        candidate_id=candidate_id,
        dataset_id=dataset_id,
        parent_version=parent,
        policy=config.policy,
        checkpoint_dir=result.checkpoint_dir,
        params={**asdict(config), "n_steps": result.samples, "tasks": ",".join(result.tasks)},
        losses=result.losses,
        final_loss=result.final_loss,
        train_seconds=result.seconds,
        code_version=code,
        flow_run_id=flow_run_id,
    )
