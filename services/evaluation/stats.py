"""Confidence intervals and paired tests on success rates (scipy, not hand-rolled)."""

from __future__ import annotations

from dataclasses import dataclass

from scipy.stats import binomtest


@dataclass(frozen=True)
class Rate:
    successes: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.successes / self.n if self.n else 0.0

    def __str__(self) -> str:
        return f"{self.value:.0%} [{self.low:.0%}, {self.high:.0%}]"


def wilson(successes: int, n: int, confidence: float = 0.95) -> Rate:
    """Success rate with its Wilson score interval (good at small n and rates near 0 or 1)."""
    if n == 0:
        return Rate(0, 0, 0.0, 1.0)
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Rate(successes, n, float(ci.low), float(ci.high))


def mcnemar_greater(candidate_only: int, champion_only: int) -> float:
    """One-sided exact McNemar p-value that the candidate succeeds more often than the champion.

    Only discordant pairs carry information: seeds where exactly one of the two succeeded.
    Under the null each discordant seed is a fair coin, so the count of candidate-only wins
    is Binomial(discordant, 1/2).
    """
    discordant = candidate_only + champion_only
    if discordant == 0:
        return 1.0
    return float(binomtest(candidate_only, discordant, 0.5, alternative="greater").pvalue)
