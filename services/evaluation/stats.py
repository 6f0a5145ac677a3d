"""Confidence intervals and paired tests on success rates (scipy, not hand-rolled)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
    # scipy.stats takes about 0.6 s to import: imported where used, so that the CLI's
    # start-up (which imports this module for its tables) does not pay for it.
    from scipy.stats import binomtest

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
    from scipy.stats import binomtest

    return float(binomtest(candidate_only, discordant, 0.5, alternative="greater").pvalue)


def paired_difference_lower_bound(
    candidate: Sequence[bool], champion: Sequence[bool], confidence: float, seed: int = 0
) -> float:
    """One-sided lower confidence bound of (candidate rate - champion rate) on paired seeds.

    A paired percentile bootstrap (scipy): resampling seeds keeps each seed's two outcomes
    together, so the bound uses the pairing that makes the comparison sharp.
    """
    c = np.asarray(candidate, dtype=float)
    h = np.asarray(champion, dtype=float)
    if len(c) == 0:
        return -1.0
    from scipy.stats import bootstrap

    result = bootstrap(
        (c, h),
        lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        alternative="greater",
        method="percentile",
        n_resamples=9999,
        random_state=seed,
    )
    return float(result.confidence_interval.low)
