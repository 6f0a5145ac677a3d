"""Normalisation statistics: computed per dataset, stored in the checkpoint, used at inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# A constant coordinate (std 0) is left centred but unscaled, instead of dividing by zero.
MIN_STD = 1e-6


@dataclass(frozen=True)
class NormalizationStats:
    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    # Steps the statistics were computed from.
    count: int

    @classmethod
    def from_arrays(cls, states: np.ndarray, actions: np.ndarray) -> NormalizationStats:
        return cls(
            state_mean=states.mean(0).astype(np.float32),
            state_std=np.maximum(states.std(0), MIN_STD).astype(np.float32),
            action_mean=actions.mean(0).astype(np.float32),
            action_std=np.maximum(actions.std(0), MIN_STD).astype(np.float32),
            count=len(states),
        )

    def normalize_state(self, states: np.ndarray) -> np.ndarray:
        return ((states - self.state_mean) / self.state_std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "state_mean": self.state_mean.tolist(),
            "state_std": self.state_std.tolist(),
            "action_mean": self.action_mean.tolist(),
            "action_std": self.action_std.tolist(),
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalizationStats:
        arrays = {k: np.asarray(v, dtype=np.float32) for k, v in data.items() if k != "count"}
        return cls(**arrays, count=int(data["count"]))
