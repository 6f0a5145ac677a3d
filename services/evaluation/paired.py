"""The evaluate stage: a candidate against the champion it was trained to replace."""

from __future__ import annotations

from services.config import Settings
from services.evaluation.closed_loop import (
    TaskEvaluation,
    compare,
    evaluate_version,
    store_evaluations,
)
from services.evaluation.offline import action_errors
from services.evaluation.videos import film_episodes, filmed_episodes
from services.registry.mlflow_registry import policy_checkpoint
from services.store import session_scope
from services.store.models import Candidate


def evaluate_against_champion(settings: Settings, candidate_id: str) -> list[TaskEvaluation]:
    """Closed-loop success per task on seeds 0..eval_episodes-1, paired with the parent,
    and offline action error on held-out operator segments. Tasks without a twin
    (``FLYWHEEL_FIELD_TASKS``) are not run in simulation: their evidence is the field's.

    The baseline is the candidate's parent: the champion it was fine-tuned from and would
    replace. Stored episodes are reused, so re-running the stage costs nothing.
    """
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None or candidate.model_version is None:
            raise LookupError(f"candidate {candidate_id} is not registered")
        version, parent = candidate.model_version, candidate.parent_version
    seeds = range(settings.evaluation.eval_episodes)

    def results_of(v: str) -> dict[str, dict[int, bool]]:
        return evaluate_version(
            settings, v, policy_checkpoint(settings, v), settings.twin_tasks, seeds
        )

    results = results_of(version)
    baseline = results_of(parent) if parent else None
    evaluations = compare(results, baseline)
    checkpoints = {"candidate": policy_checkpoint(settings, version)}
    if parent:
        checkpoints["champion"] = policy_checkpoint(settings, parent)
    store_evaluations(
        settings, candidate_id, parent, evaluations, offline=action_errors(checkpoints, settings)
    )
    # The failures the candidate page shows, and the champion on the same seeds, on video.
    filmed = filmed_episodes(evaluations)
    film_episodes(settings, version, checkpoints["candidate"], filmed)
    if parent:
        film_episodes(settings, parent, checkpoints["champion"], filmed)
    return evaluations
