"""Lineage both ways: from a model back to its data, from an intervention forward to models."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.config import Settings
from services.store import session_scope
from services.store.models import (
    Candidate,
    Dataset,
    DatasetEpisode,
    Episode,
    Intervention,
    Rollout,
)


def model_lineage(settings: Settings, version: str) -> dict[str, Any]:
    """The chain of models back to the first, each with the data it was trained on."""
    with session_scope(settings.db_url) as session:
        return lineage_of_model(session, version)


def lineage_of_model(session: Session, version: str) -> dict[str, Any]:
    chain = []
    current: str | None = version
    while current is not None:
        candidate = session.scalar(select(Candidate).where(Candidate.model_version == current))
        if candidate is None:
            if not chain:
                raise LookupError(f"no candidate has model version {version}")
            break
        dataset = session.get(Dataset, candidate.dataset_id)
        episodes = session.scalars(
            select(Episode)
            .join(DatasetEpisode, DatasetEpisode.episode_id == Episode.id)
            .where(DatasetEpisode.dataset_id == dataset.id)
        ).all()
        n_interventions = session.scalar(
            select(func.count(Intervention.id))
            .join(DatasetEpisode, DatasetEpisode.episode_id == Intervention.episode_id)
            .where(DatasetEpisode.dataset_id == dataset.id)
        )
        chain.append(
            {
                "model_version": candidate.model_version,
                "candidate_id": candidate.id,
                "parent_version": candidate.parent_version,
                "mlflow_run_id": candidate.mlflow_run_id,
                "flow_run_id": candidate.flow_run_id,
                "dataset": {
                    "id": dataset.id,
                    "scheme": dataset.scheme,
                    "steps": dataset.n_steps,
                    "class_counts": dataset.class_counts,
                    # Deleted episodes leave the manifest naming frames that are gone.
                    "reproducible": dataset.unreproducible_at is None,
                    "not_reproducible_since": dataset.unreproducible_at,
                    "not_reproducible_reason": dataset.unreproducible_reason,
                    "deleted_episodes": dataset.n_episodes - len(episodes),
                },
                "episodes": len(episodes),
                "episodes_by_robot": dict(Counter(e.robot_id for e in episodes)),
                "interventions": n_interventions,
                "episode_ids": sorted(e.id for e in episodes),
            }
        )
        current = candidate.parent_version
    return {"model_version": version, "chain": chain}


def intervention_lineage(settings: Settings, intervention_id: str) -> dict[str, Any]:
    """Every model trained on data that includes this intervention, and its rollouts."""
    with session_scope(settings.db_url) as session:
        intervention = session.get(Intervention, intervention_id)
        if intervention is None:
            raise LookupError(f"no intervention {intervention_id!r}")
        episode = intervention.episode
        datasets = session.scalars(
            select(DatasetEpisode.dataset_id).where(DatasetEpisode.episode_id == episode.id)
        ).all()
        candidates = session.scalars(
            select(Candidate)
            .where(Candidate.dataset_id.in_(datasets), Candidate.model_version.is_not(None))
            .order_by(Candidate.created_at)
        ).all()
        models = []
        for candidate in candidates:
            rollouts = session.scalars(
                select(Rollout).where(Rollout.candidate_id == candidate.id)
            ).all()
            models.append(
                {
                    "model_version": candidate.model_version,
                    "candidate_id": candidate.id,
                    "dataset_id": candidate.dataset_id,
                    "status": candidate.status,
                    "rollouts": [
                        {
                            "id": r.id,
                            "state": r.state,
                            "robots": sorted({x for s in r.stages for x in s.get("robots", [])}),
                        }
                        for r in rollouts
                    ],
                }
            )
        return {
            "intervention": {
                "id": intervention.id,
                "episode_id": episode.id,
                "robot_id": episode.robot_id,
                "task": episode.task,
                "steps": [intervention.start_step, intervention.end_step],
                "reason": intervention.reason,
            },
            "datasets": list(datasets),
            "models": models,
        }
