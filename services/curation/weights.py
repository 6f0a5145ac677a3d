"""Step classes and the weighting schemes that turn them into per-step loss weights.

Every step of every episode gets a class:

- ``demo``: a lab demonstration (the operator drove the whole episode).
- ``autonomous``: the deployed policy was in control and no takeover followed soon.
- ``pre_intervention``: the policy was in control in the window just before a takeover;
  these are the steps that led the robot into trouble.
- ``intervention``: the operator was in control during a deployment.

Sirius (Liu et al., "Robot Learning on the Job", RSS 2023, https://arxiv.org/abs/2211.08416)
weights the classes so that interventions carry about half of the total loss and
pre-intervention steps almost none, recomputed from the class counts every round.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from services.features import CONTROL_OPERATOR

DEMO = "demo"
AUTONOMOUS = "autonomous"
PRE_INTERVENTION = "pre_intervention"
INTERVENTION = "intervention"
STEP_CLASSES = (DEMO, AUTONOMOUS, PRE_INTERVENTION, INTERVENTION)

# Sirius labels the 15 steps before each takeover as pre-intervention (Sec. IV-B of the paper).
SIRIUS_PRE_INTERVENTION_WINDOW = 15


def label_steps(
    kind: str, control_source: np.ndarray, window: int = SIRIUS_PRE_INTERVENTION_WINDOW
) -> np.ndarray:
    """The class of every step of one episode, from who was in control."""
    n = len(control_source)
    if kind == "demo":
        return np.full(n, DEMO, dtype=object)
    operator = np.asarray(control_source) == CONTROL_OPERATOR
    classes = np.where(operator, INTERVENTION, AUTONOMOUS).astype(object)
    takeover_starts = np.flatnonzero(operator & ~np.r_[False, operator[:-1]])
    for start in takeover_starts:
        before = slice(max(0, start - window), start)
        classes[before] = np.where(operator[before], INTERVENTION, PRE_INTERVENTION)
    return classes


@dataclass(frozen=True)
class WeightingScheme:
    # Name recorded in the manifest.
    name: str
    # Target share of the total loss weight per class; classes not named share the remainder
    # equally per step. Shares are recomputed from the class counts of each dataset.
    shares: tuple[tuple[str, float], ...] = ()
    # Classes dropped from the dataset (weight 0).
    excluded: tuple[str, ...] = ()
    # Weight 0 for autonomous steps of episodes that ended in failure: imitating a rollout
    # that failed teaches the failure.
    drop_failed_autonomous: bool = True

    def __post_init__(self) -> None:
        total = sum(share for _, share in self.shares)
        if not 0 <= total <= 1:
            raise ValueError(f"scheme {self.name}: class shares sum to {total}, not within [0, 1]")
        unknown = {c for c, _ in self.shares} | set(self.excluded)
        if unknown - set(STEP_CLASSES):
            raise ValueError(
                f"scheme {self.name}: unknown classes {sorted(unknown - set(STEP_CLASSES))}"
            )

    def weights(self, classes: np.ndarray, failed_episode: np.ndarray) -> np.ndarray:
        """Per-step weights with mean 1 over the steps kept (0 for dropped steps)."""
        keep = ~np.isin(classes, self.excluded)
        if self.drop_failed_autonomous:
            keep &= ~((classes == AUTONOMOUS) & failed_episode)
        weights = np.zeros(len(classes), dtype=np.float64)
        n_kept = int(keep.sum())
        if n_kept == 0:
            return weights.astype(np.float32)
        counts = {c: int(((classes == c) & keep).sum()) for c in STEP_CLASSES}
        present = {c: s for c, s in self.shares if counts[c] > 0}
        rest = [c for c in STEP_CLASSES if counts[c] > 0 and c not in present]
        rest_share = 1.0 - sum(present.values())
        if not rest:  # only share-weighted classes are present: renormalise their shares
            scale = 1.0 / sum(present.values())
            present = {c: s * scale for c, s in present.items()}
            rest_share = 0.0
        n_rest = sum(counts[c] for c in rest)
        for cls in STEP_CLASSES:
            mask = (classes == cls) & keep
            if not counts[cls]:
                continue
            share = present[cls] if cls in present else rest_share * counts[cls] / n_rest
            weights[mask] = share * n_kept / counts[cls]
        return weights.astype(np.float32)


SCHEMES: dict[str, WeightingScheme] = {}


def register_scheme(scheme: WeightingScheme) -> WeightingScheme:
    if scheme.name in SCHEMES:
        raise ValueError(f"weighting scheme {scheme.name!r} is registered twice")
    SCHEMES[scheme.name] = scheme
    return scheme


# Sirius: interventions about half of the loss, pre-intervention steps about 0.2%.
register_scheme(WeightingScheme("sirius", shares=((INTERVENTION, 0.5), (PRE_INTERVENTION, 0.002))))
# Every kept step counts the same (naive retraining on all data).
register_scheme(WeightingScheme("uniform"))
# HG-DAgger (Kelly et al. 2019): only the operator's corrections are added to the demos.
register_scheme(WeightingScheme("hg-dagger", excluded=(AUTONOMOUS, PRE_INTERVENTION)))
# IWR (Mandlekar et al. 2020): intervention and other samples in equal measure.
register_scheme(WeightingScheme("iwr", shares=((INTERVENTION, 0.5),)))


def get_scheme(name: str) -> WeightingScheme:
    if name not in SCHEMES:
        close = difflib.get_close_matches(name, SCHEMES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown weighting scheme {name!r} (known: {', '.join(SCHEMES)}){hint}")
    return SCHEMES[name]
