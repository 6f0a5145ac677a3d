"""The scripted human operator: takes over when the robot is failing, hands back later.

It watches the robot as a person would: no progress for a while, progress falling away from
the best seen, or the arm heading the wrong way (moving against the direction the operator
would move it, for several steps in a row), and then it takes control, drives with the
scripted expert for a while, and gives control back. After its last allowed takeover it
finishes the episode itself. Simulated operators that step in when the learner's action
disagrees with the expert's are the usual stand-in for people in the interactive imitation
learning literature (HG-DAgger, Kelly et al. 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OperatorConfig:
    # Steps without progress before the operator takes over (30 steps: 0.4 s in Meta-World).
    patience: int = 30
    # Progress gain (on the task's [0, 1] scale) that counts as making progress.
    min_progress: float = 0.01
    # Fall below the best progress seen that counts as drifting away from the goal.
    drift: float = 0.2
    # Consecutive steps moving against the operator's own direction before taking over.
    wrong_way_steps: int = 5
    # Steps the operator keeps control before handing back.
    hold_steps: int = 40
    # Takeovers per episode; the last one keeps control to the end.
    max_takeovers: int = 3

    def __post_init__(self) -> None:
        if min(self.patience, self.hold_steps, self.max_takeovers, self.wrong_way_steps) < 1:
            raise ValueError(
                "patience, wrong_way_steps, hold_steps and max_takeovers must be at least 1"
            )
        if not (0 <= self.min_progress < 1 and 0 < self.drift <= 1):
            raise ValueError("min_progress must be in [0, 1) and drift in (0, 1]")


class Operator:
    """One operator's attention during one episode; call ``start`` before each episode."""

    def __init__(self, config: OperatorConfig = OperatorConfig(), operator_id: str = "operator-1"):
        self.config = config
        self.operator_id = operator_id
        self.start()

    def start(self) -> None:
        self.takeovers = 0
        self._remaining = 0
        self._best = 0.0
        self._stalled = 0
        self._wrong_way = 0

    @property
    def in_control(self) -> bool:
        return self._remaining > 0

    def observe(
        self, progress: float, action: np.ndarray, operator_action: np.ndarray
    ) -> str | None:
        """Watch one step: the progress after it, the robot's action and what the operator
        would have done. Returns the reason when the operator takes over."""
        cfg = self.config
        if self.in_control:
            self._remaining -= 1
            if not self.in_control:  # hand back with fresh patience
                self._best, self._stalled, self._wrong_way = progress, 0, 0
            return None
        if progress > self._best + cfg.min_progress:
            self._best, self._stalled = progress, 0
        else:
            self._stalled += 1
        self._wrong_way = self._wrong_way + 1 if _against(action, operator_action) else 0
        if self._best - progress > cfg.drift:
            return self._take_over("drifting away from the goal")
        if self._wrong_way >= cfg.wrong_way_steps:
            return self._take_over(f"heading the wrong way for {cfg.wrong_way_steps} steps")
        if self._stalled >= cfg.patience:
            return self._take_over(f"no progress for {cfg.patience} steps")
        return None

    def _take_over(self, reason: str) -> str:
        self._wrong_way = 0
        self.takeovers += 1
        last = self.takeovers >= self.config.max_takeovers
        self._remaining = 10**9 if last else self.config.hold_steps
        return reason


def _against(action: np.ndarray, operator_action: np.ndarray) -> bool:
    """Does the arm move against the operator's direction (more than 90 degrees off)?

    Only the motion part counts (all but the last coordinate when there is more than one:
    Meta-World's last action coordinate is the gripper).
    """
    motion = slice(0, -1) if len(action) > 2 else slice(None)
    return float(np.dot(action[motion], operator_action[motion])) < 0.0
