"""What a training run consumes: arrays materialised from one dataset manifest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrainingData:
    # (N, state_dim) float32: raw, unnormalised `observation.state` of every step in the manifest.
    states: np.ndarray
    # (N, action_dim) float32: the action taken at that step (by the policy or the operator).
    actions: np.ndarray
    # (N,) int64: index into `tasks` of the step's task.
    task_index: np.ndarray
    # (N,) float32: per-step loss weight from the manifest's weighting scheme (mean about 1).
    weights: np.ndarray
    # Task names, in index order; the policy's task vocabulary.
    tasks: tuple[str, ...]
    # Content hash of the manifest these arrays came from.
    dataset_id: str

    def __post_init__(self) -> None:
        n = len(self.states)
        if not (len(self.actions) == len(self.task_index) == len(self.weights) == n):
            raise ValueError("states, actions, task_index and weights must have the same length")
        if n == 0:
            raise ValueError(f"dataset {self.dataset_id} has no steps to train on")

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def __len__(self) -> int:
        return len(self.states)
