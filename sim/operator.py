"""The scripted human operator: takes over when the robot is failing, hands back later.

It watches task progress, as a person watching the robot would: no progress for a while, or
progress falling away from the best seen (drifting from the goal), and it takes control,
drives with the scripted expert for a while, then gives control back. After its last
allowed takeover it finishes the episode itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OperatorConfig:
    # Steps without progress before the operator takes over.
    patience: int = 15
    # Progress gain (on the task's [0, 1] scale) that counts as making progress.
    min_progress: float = 0.01
    # Fall below the best progress seen that counts as drifting away from the goal.
    drift: float = 0.15
    # Steps the operator keeps control before handing back.
    hold_steps: int = 25
    # Takeovers per episode; the last one keeps control to the end.
    max_takeovers: int = 3

    def __post_init__(self) -> None:
        if self.patience < 1 or self.hold_steps < 1 or self.max_takeovers < 1:
            raise ValueError("patience, hold_steps and max_takeovers must be at least 1")
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

    @property
    def in_control(self) -> bool:
        return self._remaining > 0

    def observe(self, progress: float) -> str | None:
        """Update with the latest progress; returns the reason when the operator takes over."""
        cfg = self.config
        if self.in_control:
            self._remaining -= 1
            if not self.in_control:  # hand back with fresh patience
                self._best, self._stalled = progress, 0
            return None
        if progress > self._best + cfg.min_progress:
            self._best, self._stalled = progress, 0
        else:
            self._stalled += 1
        if self._best - progress > cfg.drift:
            return self._take_over("drifting away from the goal")
        if self._stalled >= cfg.patience:
            return self._take_over(f"no progress for {cfg.patience} steps")
        return None

    def _take_over(self, reason: str) -> str:
        self.takeovers += 1
        last = self.takeovers >= self.config.max_takeovers
        self._remaining = 10**9 if last else self.config.hold_steps
        return reason
