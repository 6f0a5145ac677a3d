"""Running a policy through an episode: ACT's temporal ensembling of action chunks.

An action-chunking policy predicts the next ``chunk_size`` actions at every step, so every
step has up to ``chunk_size`` predictions of what to do now, one from each of the last chunks.
ACT (Zhao et al. 2023, section 3.3) runs their weighted mean with weights
``w_i = exp(-m * i)``, ``w_0`` the oldest prediction: smooth motion without the jerk of
switching chunks, and without running a chunk open-loop. A policy that predicts one action
(a chunk of 1) just acts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# ACT's m: how fast the weight of newer predictions falls (0 = plain mean; larger = trust
# the oldest prediction more). The paper's value.
ENSEMBLE_M = 0.01

# (state, task, images) -> the chunk predicted now, (chunk_size, action_dim).
ChunkFn = Callable[[np.ndarray, str, Mapping[str, np.ndarray] | None], np.ndarray]


class TemporalEnsemble:
    """The last ``chunk_size`` chunks, oldest first; ``add`` gives the action to run now."""

    def __init__(self, chunk_size: int, m: float = ENSEMBLE_M) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        if m < 0:
            raise ValueError(f"m must be at least 0, got {m}")
        self.chunk_size = chunk_size
        self.m = m
        self._chunks: deque[np.ndarray] = deque(maxlen=chunk_size)

    def add(self, chunk: np.ndarray) -> np.ndarray:
        """``chunk``: (chunk_size, A), predicted at this step. Returns (A,)."""
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or len(chunk) != self.chunk_size:
            raise ValueError(f"expected a chunk of shape ({self.chunk_size}, A), got {chunk.shape}")
        self._chunks.append(chunk)
        n = len(self._chunks)
        if n == 1:  # the first step, or a policy of one action per step: nothing to ensemble
            return chunk[0].copy()
        # The chunk predicted i steps after the oldest is n - 1 - i steps old, so its
        # prediction for now is its row n - 1 - i.
        predictions = np.stack([c[n - 1 - i] for i, c in enumerate(self._chunks)])
        weights = np.exp(-self.m * np.arange(n))
        weights /= weights.sum()
        return (weights @ predictions.astype(np.float64)).astype(chunk.dtype)


class EpisodeActor:
    """One episode of a policy, called every control step: ``actor(state, task, images)``
    (a ``PolicyFn`` when called with state and task only). Start a new one per episode."""

    def __init__(self, chunk: ChunkFn, chunk_size: int, m: float = ENSEMBLE_M) -> None:
        self._chunk = chunk
        self._ensemble = TemporalEnsemble(chunk_size, m)

    def __call__(
        self, state: np.ndarray, task: str, images: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        return self._ensemble.add(self._chunk(state, task, images))
