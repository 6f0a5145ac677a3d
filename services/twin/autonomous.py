"""The policy alone in the twin, no operator: one closed-loop evaluation episode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.twin.env import PolicyFn, SimEnv
from services.twin.eyes import Look


@dataclass(frozen=True)
class AutonomousResult:
    success: bool
    steps: int
    final_reward: float
    # The trajectory, when recorded: states before each step, actions, rewards after.
    states: np.ndarray | None = None
    actions: np.ndarray | None = None
    rewards: np.ndarray | None = None


def run_autonomous(
    env: SimEnv,
    seed: int,
    policy: PolicyFn,
    *,
    record: bool = False,
    before_step: Callable[[], None] | None = None,
    look: Look | None = None,
) -> AutonomousResult:
    """The policy alone, no operator: closed-loop evaluation. ``record`` keeps the trajectory
    so a reviewer can look at a failure; ``before_step`` is called with the scene as the
    policy sees it before each step (a camera renders it); ``look`` gives a vision policy its
    step's frames (``services.twin.eyes``)."""
    state = env.reset(seed)
    reward = 0.0
    states, actions, rewards = [], [], []
    steps, success = 0, False
    while steps < env.max_steps and not success:
        if before_step is not None:
            before_step()
        images = look(steps) if look is not None else None
        action = policy(state, env.task) if images is None else policy(state, env.task, images)
        if record:
            states.append(state)
            actions.append(action)
        result = env.step(action)
        state, reward, success = result.state, result.reward, result.success
        steps += 1
        if record:
            rewards.append(reward)
    if not record:
        return AutonomousResult(success, steps, reward)
    return AutonomousResult(
        success,
        steps,
        reward,
        np.asarray(states, np.float32),
        np.asarray(actions, np.float32),
        np.asarray(rewards, np.float32),
    )
