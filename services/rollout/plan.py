"""Rollout plans: which robots run the candidate at each stage, and what each stage watches.

A plan is a list of stage specs (``spec.py``): declared in a plan file
(``FLYWHEEL_ROLLOUT_PLAN``), or built from the ``FLYWHEEL_ROLLOUT_*`` settings with the same
tests and limits at every stage (``FLYWHEEL_ROLLOUT_STAGES`` gives the shares).

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
from dataclasses import dataclass, replace

from services.config import Settings
from services.rollout.sequential import SPRT, ProportionSPRT
from services.rollout.spec import METRICS, PlanError, StageSpec, read_plan
from services.rollout.stages import Stage


@dataclass(frozen=True)
class RolloutPlan:
    # The stages, in order: shares increasing, the last the whole fleet.
    specs: tuple[StageSpec, ...]

    def __post_init__(self) -> None:
        shares = [s.share for s in self.specs]
        if not shares or shares[-1] != 1.0:
            raise PlanError(f"a rollout plan must end at the whole fleet (1.0): {shares}")
        if shares != sorted(set(shares)):
            raise PlanError(f"stage shares must increase within (0, 1]: {shares}")

    @classmethod
    def of(
        cls,
        shares: Sequence[float],
        *,
        min_episodes: int = 12,
        max_episodes: int | None = 240,
        max_hours: float | None = 24.0,
        test: SPRT | None = None,
        failure_test: ProportionSPRT | None = None,
    ) -> RolloutPlan:
        """Every stage with the same tests and limits."""
        if any(not 0 < s <= 1 for s in shares):
            raise PlanError(f"stage shares must increase within (0, 1]: {tuple(shares)}")
        tests = {"failures": failure_test or ProportionSPRT(), "interventions": test or SPRT()}
        return cls(
            tuple(
                StageSpec(
                    share=share,
                    tests=tests,
                    min_episodes=min_episodes,
                    max_episodes=max_episodes,
                    max_hours=max_hours,
                )
                for share in shares
            )
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> RolloutPlan:
        """The plan file if one is set, else the same tests and limits at every stage."""
        r = settings.rollout
        # FLYWHEEL_ROLLOUT_ALPHA is the chance of rolling back a candidate as good as the
        # champion for the rollout as a whole: each of the two tests gets half (Bonferroni),
        # or two tests at alpha each roll back nearly 2 alpha of good candidates.
        alpha = r.alpha / len(METRICS)
        if r.plan is not None:
            defaults = {
                "min_episodes": r.min_episodes,
                "max_episodes": r.max_episodes,
                "max_hours": r.max_hours,
                "metrics": {
                    "failures": {"alpha": alpha, "beta": r.beta, "increase": r.failure_increase},
                    "interventions": {"alpha": alpha, "beta": r.beta, "ratio": r.worse_ratio},
                },
            }
            return cls(tuple(read_plan(r.plan, defaults=defaults)))
        return cls.of(
            r.stages,
            min_episodes=r.min_episodes,
            max_episodes=r.max_episodes,
            max_hours=r.max_hours,
            test=SPRT(alpha=alpha, beta=r.beta, ratio=r.worse_ratio),
            failure_test=ProportionSPRT(alpha=alpha, beta=r.beta, increase=r.failure_increase),
        )

    def with_canary(self, share: float) -> RolloutPlan:
        """This plan, or one whose first stage is a canary of ``share`` of the fleet (with the
        first stage's tests and limits) when this one starts on the whole fleet: a candidate
        judged on field evidence meets the robots on a canary first."""
        first = self.specs[0]
        if first.share < 1.0:
            return self
        return RolloutPlan((replace(first, share=share), *self.specs))

    def thresholds(self) -> dict[str, float]:
        """Each metric's rollback bound at the first stage that watches it (for charts)."""
        out: dict[str, float] = {}
        for spec in self.specs:
            for metric, test in spec.tests.items():
                out.setdefault(metric, test.upper)
        return out

    def stages(self, version: str, robots: Sequence[str]) -> list[Stage]:
        """The stages of a new rollout of model ``version``: name, share, robots on it."""
        order = sorted(robots, key=lambda r: hashlib.sha256(f"{version}/{r}".encode()).digest())
        stages: list[Stage] = []
        for spec in self.specs:
            share = spec.share
            size = len(order) if share == 1.0 else max(1, math.floor(share * len(order)))
            if stages and size == len(stages[-1].robots):
                continue  # a small fleet: this stage would change nothing
            name = "fleet" if share == 1.0 else ("canary" if not stages else f"{share:.0%}")
            stages.append(
                Stage(
                    name=name,
                    share=share,
                    robots=tuple(sorted(order[:size])),
                    llr={metric: 0.0 for metric in spec.tests},
                    spec=spec,
                )
            )
        return stages
