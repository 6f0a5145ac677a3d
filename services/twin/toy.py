"""A tiny numpy task with the simulator's interface: a point moving to a goal on a plane.

It runs thousands of steps per second, so unit and end-to-end tests exercise the whole loop
without MuJoCo. Lab demonstrations only see goals on the left half of the plane.
"""

from __future__ import annotations

import numpy as np

from services.twin.env import StepResult


class ToyReach:
    task = "toy-reach"
    # [x, y, goal x, goal y]
    state_dim = 4
    action_dim = 2
    max_steps = 60
    control_hz = 10.0
    # How far one full-scale action moves the point, and how close counts as reached.
    speed = 0.08
    tolerance = 0.05
    # A point on a plane has nothing to look at: no cameras, and no MuJoCo to render them.
    camera_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._state = np.zeros(4, dtype=np.float32)
        self._start_distance = 1.0

    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        self._state = rng.uniform(-1.0, 1.0, size=4).astype(np.float32)
        self._start_distance = max(self._distance(), 1e-6)
        return self._state.copy()

    def step(self, action: np.ndarray) -> StepResult:
        move = np.clip(np.asarray(action, dtype=np.float32)[:2], -1.0, 1.0) * self.speed
        self._state[:2] = np.clip(self._state[:2] + move, -1.5, 1.5)
        distance = self._distance()
        progress = float(np.clip(1.0 - distance / self._start_distance, 0.0, 1.0))
        return StepResult(self._state.copy(), -distance, progress, distance < self.tolerance)

    def expert_action(self, state: np.ndarray) -> np.ndarray:
        return np.clip((state[2:4] - state[:2]) / self.speed, -1.0, 1.0).astype(np.float32)

    def in_lab_workspace(self) -> bool:
        return bool(self._state[2] < 0.0)

    def open_cameras(self, names: tuple[str, ...], px: int):
        raise ValueError(f"{self.task} has no cameras (asked for {', '.join(names)})")

    def _distance(self) -> float:
        return float(np.linalg.norm(self._state[2:4] - self._state[:2]))
