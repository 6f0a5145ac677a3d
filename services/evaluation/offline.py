"""Offline evaluation on held-out fleet episodes: does the model act like the operator?

On held-out deployment episodes (never trained on: see ``curation.manifest.is_held_out``)
each model's action is compared with the operator's on every operator-controlled step:
exactly the situations where the deployed policy needed help. Steps where the policy was in
control are left out, since those actions came from the champion itself.

A vision policy is given the frames its cameras showed at those steps, decoded from the
store's videos (as training decodes them), a chunk of steps at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.config import Settings
from services.curation.manifest import held_out_episodes
from services.episode_store.camera_index import CameraIndex
from services.episode_store.frames import FrameReader
from services.episode_store.parquet import EpisodeStore
from services.features import (
    ACTION,
    CONTROL_OPERATOR,
    CONTROL_SOURCE,
    EPISODE_ID,
    EPISODE_INDEX,
    FRAME_INDEX,
    IMAGE_PREFIX,
    OBSERVATION_STATE,
)

# Steps whose frames are decoded and scored at once: bounds the memory frames take.
CHUNK = 256


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
    cameras = sorted({camera.name for p in policies.values() for camera in p.cameras})
    store = EpisodeStore(settings.episode_store)
    index = CameraIndex(store, frames[EPISODE_ID].unique().tolist(), "held-out episodes")
    results: dict[str, dict] = {}
    with FrameReader(store.root) as reader:
        for task, rows in frames.groupby("task"):
            states = np.stack(rows[OBSERVATION_STATE].to_numpy()).astype(np.float32)
            actions = np.stack(rows[ACTION].to_numpy()).astype(np.float32)
            metrics: dict = {
                "held_out_episodes": int(rows[EPISODE_ID].nunique()),
                "operator_steps": len(rows),
            }
            scored = {n: p for n, p in policies.items() if task in p.config.tasks}
            squared = dict.fromkeys(scored, 0.0)
            for start in range(0, len(rows), CHUNK):
                chunk = slice(start, start + CHUNK)
                pictures = {
                    camera: reader.frames(
                        IMAGE_PREFIX + camera,
                        index.locate(
                            camera,
                            rows[EPISODE_INDEX].to_numpy()[chunk],
                            rows[FRAME_INDEX].to_numpy()[chunk],
                        ),
                    )
                    for camera in cameras
                }
                for name, policy in scored.items():
                    seen = {c.name: pictures[c.name] for c in policy.cameras} or None
                    task_index = np.full(len(states[chunk]), policy.config.tasks.index(task))
                    predicted = policy.act_batch(states[chunk], task_index, seen)
                    squared[name] += float(np.sum((predicted - actions[chunk]) ** 2))
            for name in policies:
                mse = squared[name] / actions.size if name in scored else None
                metrics[f"{name}_action_mse"] = mse
            results[str(task)] = metrics
    return results
