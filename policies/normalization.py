"""Normalisation statistics: computed per dataset, stored in the checkpoint, used at inference."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policies.images import MIN_STD, ImageStats


@dataclass(frozen=True)
class NormalizationStats:
    state_mean: np.ndarray
    state_std: np.ndarray
    action_mean: np.ndarray
    action_std: np.ndarray
    # Steps the statistics were computed from.
    count: int
    # Per camera name, its frames' per-channel statistics (empty for a state policy).
    images: dict[str, ImageStats] = field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls,
        states: np.ndarray,
        actions: np.ndarray,
        images: dict[str, ImageStats] | None = None,
    ) -> NormalizationStats:
        return cls(
            state_mean=states.mean(0).astype(np.float32),
            state_std=np.maximum(states.std(0), MIN_STD).astype(np.float32),
            action_mean=actions.mean(0).astype(np.float32),
            action_std=np.maximum(actions.std(0), MIN_STD).astype(np.float32),
            count=len(states),
            images=dict(images or {}),
        )

    def normalize_state(self, states: np.ndarray) -> np.ndarray:
        return ((states - self.state_mean) / self.state_std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "state_mean": self.state_mean.tolist(),
            "state_std": self.state_std.tolist(),
            "action_mean": self.action_mean.tolist(),
            "action_std": self.action_std.tolist(),
            "count": self.count,
        }
        # A state policy's stats.json stays exactly what it was before cameras existed.
        if self.images:
            data["images"] = {name: s.to_dict() for name, s in self.images.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NormalizationStats:
        arrays = {
            k: np.asarray(v, dtype=np.float32)
            for k, v in data.items()
            if k not in ("count", "images")
        }
        images = {name: ImageStats.from_dict(s) for name, s in data.get("images", {}).items()}
        return cls(**arrays, count=int(data["count"]), images=images)
