"""A sequential test that the candidate's robots do worse than the champion's.

For a rate with an exposure (failures per episode, interventions per robot-hour), robots on
the candidate (treatment) and robots still on the champion (control) are compared window by
window. Conditional on the events seen in a window, each event came from the treatment
group with probability

    pi0 = e_t / (e_t + e_c)            if the rates are equal (H0), and
    pi1 = r e_t / (r e_t + e_c)        if the candidate's rate is r times the champion's (H1),

where e_t and e_c are the two groups' exposures in that window. Wald's sequential
probability ratio test adds up the log-likelihood ratio of H1 against H0 over the windows
and stops as soon as it crosses ``log((1 - beta) / alpha)`` (the candidate is worse: roll
back) or ``log(beta / (1 - alpha))`` (it is not). Its error rates hold however often the
controller looks, which is what lets it decide at every window. This is the conditional
(binomial) form of the Poisson-rate SPRT used in sequential safety surveillance; the
conditioning removes the unknown baseline rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WORSE, NOT_WORSE, CONTINUE = "worse", "not-worse", "continue"


@dataclass(frozen=True)
class _Wald:
    """Wald's stopping bounds on a log-likelihood ratio of "worse" against "as good"."""

    # Chance of rolling back a candidate that is as good as the champion.
    alpha: float = 0.05
    # Chance of missing a candidate as much worse as the test is built to catch.
    beta: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1 and 0 < self.beta < 1 and self.alpha + self.beta < 1):
            raise ValueError("alpha and beta must be in (0, 1) with alpha + beta < 1")

    @property
    def upper(self) -> float:
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        return math.log(self.beta / (1 - self.alpha))

    def decide(self, llr: float) -> str:
        if llr >= self.upper:
            return WORSE
        if llr <= self.lower:
            return NOT_WORSE
        return CONTINUE


@dataclass(frozen=True)
class SPRT(_Wald):
    """The conditional Poisson-rate test of the module docstring: events over exposure."""

    # The degradation the test is built to catch, as a rate ratio (candidate / champion).
    ratio: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ratio <= 1:
            raise ValueError(f"ratio must be above 1, got {self.ratio}")

    def window_llr(
        self,
        treatment_events: int,
        treatment_exposure: float,
        control_events: int,
        control_exposure: float,
    ) -> float:
        """The log-likelihood ratio one window adds; 0 when a group had no exposure."""
        if min(treatment_events, control_events) < 0:
            raise ValueError("event counts cannot be negative")
        if treatment_exposure <= 0 or control_exposure <= 0:
            return 0.0
        p0 = treatment_exposure / (treatment_exposure + control_exposure)
        p1 = self.ratio * treatment_exposure / (self.ratio * treatment_exposure + control_exposure)
        return treatment_events * math.log(p1 / p0) + control_events * math.log((1 - p1) / (1 - p0))


@dataclass(frozen=True)
class ProportionSPRT(_Wald):
    """Wald's SPRT for a failure proportion against the control group's.

    Each of the candidate's episodes is a Bernoulli trial: H0 says it fails as often as the
    champion's robots do (p0, from the control group so far), H1 says ``increase`` more often
    (p1 = p0 + increase). Used for failure rates, which are bounded by 1 (a rate ratio cannot
    reach 2 when the champion already fails half the time).

    p0 is a plug-in from the control group, which makes the error rates approximate; taken
    half a standard error above the control's smoothed rate, it keeps false rollbacks at or
    under alpha in simulation (3% at alpha 5%, tests/rollout/test_sequential.py), where the
    bare estimate gave 7%.
    """

    # The degradation the test is built to catch: this many more failures per episode.
    increase: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.increase < 1:
            raise ValueError(f"increase must be in (0, 1), got {self.increase}")

    def window_llr(
        self, failures: int, episodes: int, control_failures: int, control_episodes: int
    ) -> float:
        """LLR of one window's candidate episodes, with p0 from the control group so far
        (``control_*`` are the stage's cumulative counts, this window included)."""
        if not 0 <= failures <= episodes or not 0 <= control_failures <= control_episodes:
            raise ValueError("failures must lie between 0 and the number of episodes")
        if episodes == 0 or control_episodes == 0:
            return 0.0
        rate = (control_failures + 1) / (control_episodes + 2)
        p0 = min(rate + 0.5 * math.sqrt(rate * (1 - rate) / (control_episodes + 2)), 0.98)
        p1 = min(p0 + self.increase, 0.999)
        return failures * math.log(p1 / p0) + (episodes - failures) * math.log((1 - p1) / (1 - p0))
