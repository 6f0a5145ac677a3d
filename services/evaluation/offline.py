"""Offline evaluation on held-out fleet episodes: does the model act like the operator?

On held-out deployment episodes (never trained on: see ``curation.manifest.is_held_out``)
each model's action is compared with the operator's on every operator-controlled step:
exactly the situations where the deployed policy needed help. Steps where the policy was in
control are left out, since those actions came from the champion itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.config import Settings
from services.curation.manifest import held_out_episodes
from services.episode_store.parquet import EpisodeStore
from services.features import (
    ACTION,
    CONTROL_OPERATOR,
    CONTROL_SOURCE,
    EPISODE_ID,
    OBSERVATION_STATE,
)


def operator_segments(settings: Settings):
    """Frames of operator-controlled steps in held-out episodes, with their task; None if
    nothing is held out yet."""
    episodes = held_out_episodes(settings)
    if not episodes:
        return None
    frames = EpisodeStore(settings.episode_store).read_frames(
        [e.id for e in episodes], data_files={e.id: e.data_file for e in episodes}
    )
    return frames[frames[CONTROL_SOURCE] == CONTROL_OPERATOR]


def action_errors(checkpoints: dict[str, Path], settings: Settings) -> dict[str, dict]:
    """Per task: held-out episodes, operator steps, and each model's mean squared action error
    on them (keyed by the names given in ``checkpoints``, e.g. candidate and champion)."""
    from policies.checkpoint import load_checkpoint

    found = operator_segments(settings)
    if found is None:
        return {}
    frames = found
    policies = {name: load_checkpoint(path) for name, path in checkpoints.items()}
    results: dict[str, dict] = {}
    for task, rows in frames.groupby("task"):
        states = np.stack(rows[OBSERVATION_STATE].to_numpy()).astype(np.float32)
        actions = np.stack(rows[ACTION].to_numpy()).astype(np.float32)
        metrics: dict = {
            "held_out_episodes": int(rows[EPISODE_ID].nunique()),
            "operator_steps": len(rows),
        }
        for name, policy in policies.items():
            if task not in policy.config.tasks:
                metrics[f"{name}_action_mse"] = None
                continue
            index = np.full(len(rows), policy.config.tasks.index(task))
            predicted = policy.act_batch(states, index)
            metrics[f"{name}_action_mse"] = float(np.mean((predicted - actions) ** 2))
        results[str(task)] = metrics
    return results
