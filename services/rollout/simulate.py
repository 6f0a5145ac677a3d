"""The rollout rule's error rates, by simulation: simulated heartbeats from candidate and
champion robots, judged window by window by the rule production runs (``rule.judge`` and
``rule.carry`` on the stages ``RolloutPlan.stages`` builds), caps included.

Each window, every robot works ``episodes_per_window`` episodes of ``episode_minutes``; an
episode fails with the policy's failure rate and has a Poisson number of interventions. The
candidate's rates are the champion's with an ``Effect`` applied. A run ends when a stage
rolls back, pauses (a cap or a manual gate), or the rollout reaches the last stage
(promoted). ``bench/rollout_rule.py`` prints the table; tests/rollout/test_rule_rates.py
holds the rates to their bounds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from services.rollout.plan import RolloutPlan
from services.rollout.rule import ADVANCE, PAUSE, ROLLBACK, carry, judge

PROMOTED, ROLLED_BACK, PAUSED = "promoted", "rolled back", "paused"


@dataclass(frozen=True)
class SimulatedFleet:
    # Robots in the fleet; the plan's shares pick the candidate's.
    robots: int = 4
    # Episodes each robot works between two looks of the controller.
    episodes_per_window: int = 4
    # Length of an episode (the exposure behind interventions per robot-hour).
    episode_minutes: float = 3.0
    # The champion's failure rate and interventions per episode.
    failure_rate: float = 0.5
    interventions_per_episode: float = 1.0


@dataclass(frozen=True)
class Effect:
    """How much worse the candidate is than the champion."""

    name: str
    # Added to the champion's failure rate (capped at 1).
    failure_increase: float = 0.0
    # The candidate's interventions per robot-hour over the champion's.
    intervention_ratio: float = 1.0

    @property
    def worse(self) -> bool:
        return self.failure_increase > 0 or self.intervention_ratio > 1


def simulate(
    plan: RolloutPlan, fleet: SimulatedFleet, effect: Effect, *, runs: int, seed: int
) -> dict[str, float]:
    """Shares of ``runs`` rollouts that were promoted, rolled back and paused, and the mean
    candidate episodes a rollout took to end."""
    rng = np.random.default_rng(seed)
    outcomes: Counter[str] = Counter()
    episodes = 0
    for _ in range(runs):
        outcome, worked = _one_rollout(plan, fleet, effect, rng)
        outcomes[outcome] += 1
        episodes += worked
    rates = {o: outcomes[o] / runs for o in (PROMOTED, ROLLED_BACK, PAUSED)}
    return {**rates, "candidate episodes": episodes / runs}


def _one_rollout(
    plan: RolloutPlan, fleet: SimulatedFleet, effect: Effect, rng: np.random.Generator
) -> tuple[str, int]:
    robots = [f"robot-{i:03d}" for i in range(fleet.robots)]
    stages = plan.stages("simulated", robots)
    hours = fleet.episode_minutes / 60
    p_champion = fleet.failure_rate
    p_candidate = min(fleet.failure_rate + effect.failure_increase, 1.0)
    rate_champion = fleet.interventions_per_episode
    rate_candidate = rate_champion * effect.intervention_ratio
    worked, previous = 0, None
    for stage in stages:
        if stage.is_last:
            return PROMOTED, worked
        if previous is not None:
            stage = carry(previous, stage)
        on_candidate = len(stage.robots)
        windows = 0
        while True:
            n_t = on_candidate * fleet.episodes_per_window
            n_c = (fleet.robots - on_candidate) * fleet.episodes_per_window
            treatment = _counts(rng, n_t, p_candidate, rate_candidate, hours)
            control = _counts(rng, n_c, p_champion, rate_champion, hours)
            windows += 1
            judged = judge(
                stage, treatment, control, hours=windows * fleet.episodes_per_window * hours
            )
            stage = judged.stage
            worked += n_t
            if judged.decision == ROLLBACK:
                return ROLLED_BACK, worked
            if judged.decision == PAUSE:
                return PAUSED, worked
            if judged.decision == ADVANCE:
                previous = stage
                break
    return PROMOTED, worked


def _counts(
    rng: np.random.Generator, episodes: int, failure_rate: float, per_episode: float, hours: float
) -> dict[str, float]:
    return {
        "episodes": episodes,
        "failures": int(rng.binomial(episodes, failure_rate)),
        "interventions": int(rng.poisson(per_episode * episodes)),
        "hours": episodes * hours,
    }


# The effects the table reports: as good, slightly worse, as much worse as each test is built
# to catch (the default FLYWHEEL_ROLLOUT_FAILURE_INCREASE and _WORSE_RATIO), and much worse.
EFFECTS = (
    Effect("as good"),
    Effect("slightly worse: +0.10 failures, 1.3x takeovers", 0.10, 1.3),
    Effect("built to catch: +0.25 failures", 0.25),
    Effect("built to catch: 2x takeovers", 0.0, 2.0),
    Effect("much worse: +0.50 failures, 4x takeovers", 0.50, 4.0),
)
