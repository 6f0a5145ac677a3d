"""Closed-loop evaluation trajectories, one small Parquet file per episode.

Kept for every evaluation episode so that a reviewer can open any failure, and the same
seed of the champion next to it, without running the simulator again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.config import Settings
from services.features import ACTION, FRAME_INDEX, OBSERVATION_STATE

REWARD = "reward"
# Failing episodes of a candidate filmed, with the champion on the same seeds: the first ones
# in (task, seed) order, the ones the candidate page shows (services/evaluation/videos.py).
FILMED_FAILURES = 4
# Evaluation videos play at this rate, one frame per step (slower than the simulator's
# control rate, so that a reviewer can follow the gripper).
VIDEO_FPS = 20


def trajectory_path(settings: Settings, suite: str, version: str, task: str, seed: int) -> Path:
    return settings.root / "evaluations" / suite / version / task / f"{seed}.parquet"


def video_path(settings: Settings, suite: str, version: str, task: str, seed: int) -> Path:
    """The episode's camera video, beside its trajectory: recorded only for the episodes a
    reviewer is shown (services/evaluation/videos.py)."""
    return trajectory_path(settings, suite, version, task, seed).with_suffix(".mp4")


def write_trajectory(
    path: Path, states: np.ndarray, actions: np.ndarray, rewards: np.ndarray
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            FRAME_INDEX: pa.array(np.arange(len(states), dtype=np.int32)),
            OBSERVATION_STATE: pa.FixedSizeListArray.from_arrays(
                pa.array(states.reshape(-1), pa.float32()), states.shape[1]
            ),
            ACTION: pa.FixedSizeListArray.from_arrays(
                pa.array(actions.reshape(-1), pa.float32()), actions.shape[1]
            ),
            REWARD: pa.array(rewards, pa.float32()),
        }
    )
    tmp = path.with_name(f".{path.name}.partial")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_trajectory(path: Path) -> dict[str, list]:
    """Steps, states, actions and rewards as lists (JSON-ready); LookupError if not kept."""
    if not path.exists():
        raise LookupError(f"no stored trajectory at {path}")
    table = pq.read_table(path)
    return {
        "steps": table.num_rows,
        "states": table[OBSERVATION_STATE].to_pylist(),
        "actions": table[ACTION].to_pylist(),
        "rewards": table[REWARD].to_pylist(),
    }
