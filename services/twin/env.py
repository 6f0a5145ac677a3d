"""The interface every simulated task offers the fleet, the operator and the evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.twin.render import SceneCameras


@dataclass(frozen=True)
class StepResult:
    state: np.ndarray
    reward: float
    # Task progress in [0, 1]: what the operator watches to decide that the robot is stuck.
    progress: float
    success: bool


class SimEnv(Protocol):
    task: str
    state_dim: int
    action_dim: int
    max_steps: int
    control_hz: float
    # The cameras the task's robot has (none: its episodes are recorded without frames).
    camera_names: tuple[str, ...]

    def reset(self, seed: int) -> np.ndarray: ...
    def step(self, action: np.ndarray) -> StepResult: ...
    def expert_action(self, state: np.ndarray) -> np.ndarray: ...
    # After reset: does this initial condition lie in the part of the workspace the lab covers?
    def in_lab_workspace(self) -> bool: ...
    # A renderer of the named cameras (some of ``camera_names``), frames ``px`` a side.
    def open_cameras(self, names: tuple[str, ...], px: int) -> SceneCameras: ...


# (state, task[, images]) -> action: what Flywheel hands a robot to run. A vision policy also
# takes the step's frames, camera name -> uint8 (H, W, 3) (``services.twin.eyes``).
PolicyFn = Callable[..., np.ndarray]
