"""Rollout plans: which robots run the candidate at each stage, and when a stage may end.

Robots are ordered by a hash of (model version, robot id), so each rollout picks its own
canary robots. Not of the candidate's id: that includes the commit of the code that trained it
(lineage), and a canary that moved with every commit made the same seeded nights pick other
robots, and so print another demo table, on every checkout. Every stage's robots include the
previous stage's: a robot never flips back to the champion on the way up. The last stage
covers the whole fleet and makes the candidate champion; every stage before it keeps some
robots on the champion as the control group.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from services.config import Settings
from services.rollout.sequential import SPRT, WORSE, ProportionSPRT
from services.rollout.stages import Stage

# Watched metrics: events over exposure, compared between candidate and champion robots.
# A failure is an episode the robot did not complete on its own (it failed, or the operator
# had to finish it); an intervention is one operator takeover.
METRICS = {
    "failures": "episodes",  # failure rate, per episode
    "interventions": "hours",  # interventions per robot-hour
}


@dataclass(frozen=True)
class RolloutPlan:
    # Share of the fleet on the candidate at each stage, increasing, ending at 1.0.
    shares: tuple[float, ...] = (0.25, 0.5, 1.0)
    # Episodes the candidate's robots must work in a stage before it may move on: enough for
    # the tests to see the degradations they are built for (a candidate that never finishes
    # a task alone is caught within 12 episodes about 95% of the time).
    min_episodes: int = 12
    # Interventions per robot-hour: the conditional Poisson-rate SPRT (a rate ratio).
    test: SPRT = SPRT()
    # Failure rate: the proportion SPRT (an absolute increase).
    failure_test: ProportionSPRT = ProportionSPRT()

    def __post_init__(self) -> None:
        if not self.shares or self.shares[-1] != 1.0:
            raise ValueError(f"a rollout plan must end at the whole fleet (1.0): {self.shares}")
        if any(not 0 < s <= 1 for s in self.shares) or list(self.shares) != sorted(
            set(self.shares)
        ):
            raise ValueError(f"stage shares must increase within (0, 1]: {self.shares}")
        if self.min_episodes < 1:
            raise ValueError("min_episodes must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> RolloutPlan:
        return cls(
            shares=tuple(settings.rollout.stages),
            min_episodes=settings.rollout.min_episodes,
            test=SPRT(
                alpha=settings.rollout.alpha,
                beta=settings.rollout.beta,
                ratio=settings.rollout.worse_ratio,
            ),
            failure_test=ProportionSPRT(
                alpha=settings.rollout.alpha,
                beta=settings.rollout.beta,
                increase=settings.rollout.failure_increase,
            ),
        )

    def window_llr(self, metric: str, treatment: dict, control: dict, control_total: dict) -> float:
        """What one window adds to a metric's log-likelihood ratio (worse vs as good)."""
        if metric == "failures":
            return self.failure_test.window_llr(
                treatment["failures"],
                treatment["episodes"],
                control_total["failures"],
                control_total["episodes"],
            )
        exposure = METRICS[metric]
        return self.test.window_llr(
            treatment[metric], treatment[exposure], control[metric], control[exposure]
        )

    def breached(self, metric: str, llr: float) -> bool:
        test = self.failure_test if metric == "failures" else self.test
        return test.decide(llr) == WORSE

    def threshold(self, metric: str) -> str:
        if metric == "failures":
            t = self.failure_test
            return f"{t.upper:.2f} (alpha {t.alpha}, built to catch +{t.increase:.0%} failures)"
        return f"{self.test.upper:.2f} (alpha {self.test.alpha}, a {self.test.ratio:g}x worse rate)"

    def stages(self, version: str, robots: Sequence[str]) -> list[Stage]:
        """The stages of a new rollout of model ``version``: name, share, robots on it."""
        order = sorted(robots, key=lambda r: hashlib.sha256(f"{version}/{r}".encode()).digest())
        stages: list[Stage] = []
        for share in self.shares:
            size = len(order) if share == 1.0 else max(1, math.floor(share * len(order)))
            if stages and size == len(stages[-1].robots):
                continue  # a small fleet: this stage would change nothing
            name = "fleet" if share == 1.0 else ("canary" if not stages else f"{share:.0%}")
            stages.append(
                Stage(
                    name=name,
                    share=share,
                    robots=tuple(sorted(order[:size])),
                    llr={metric: 0.0 for metric in METRICS},
                )
            )
        return stages
