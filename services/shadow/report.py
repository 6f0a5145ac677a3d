"""The shadow report: what the candidate would have done on the fleet's own episodes.

The shadow log (``services/shadow/log.py``) holds, for every step a robot running the
champion asked the policy server about, the champion's answer and the candidate's. Joined
with the ingested episode (who was in control at that step, what the operator did, how it
ended), per task and with bootstrap intervals over episodes (steps of one episode are not
independent; episodes are):

- **operator steps**: how far the candidate's and the champion's actions were from the
  operator's, on the steps an operator controlled (the situations the champion needed help
  in, never trained on: the shift came after the candidate was trained). Distances are RMS
  over the action's dimensions.
- **before takeovers**: in the ``pre_takeover_s`` seconds before each takeover, whether the
  candidate would have acted differently from the champion (RMS difference above
  ``tolerance`` on average over the window). A candidate that acts like the champion where
  the champion lost control is likely to lose it too.
- **autonomous successes**: on episodes the champion finished alone, the share of steps on
  which the candidate agrees with it (within ``tolerance``): what a swap could break.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import select

from services.config import Settings
from services.episode_store.parquet import EpisodeStore
from services.features import (
    ACTION,
    CONTROL_OPERATOR,
    CONTROL_POLICY,
    CONTROL_SOURCE,
    EPISODE_ID,
    FRAME_INDEX,
    TIMESTAMP,
)
from services.shadow.log import read_counts, read_shadow_log
from services.store import session_scope
from services.store.models import Episode, ShadowRun


@dataclass(frozen=True)
class ReportConfig:
    # Largest RMS difference between two actions that still counts as the same action.
    tolerance: float = 0.1
    # Seconds before a takeover in which the candidate's actions are compared.
    pre_takeover_s: float = 1.0
    # Two-sided confidence of the intervals shown.
    confidence: float = 0.95


@dataclass
class TaskEvidence:
    """Per-episode values of one task, kept so that the gate can compute its own bounds."""

    task: str
    episodes: int = 0
    # Per episode with operator steps: mean RMS distance to the operator's actions.
    candidate_distance: list[float] = field(default_factory=list)
    champion_distance: list[float] = field(default_factory=list)
    operator_steps: int = 0
    # Per episode with takeovers: takeovers, and how many the candidate would have met
    # acting differently from the champion.
    takeovers: list[int] = field(default_factory=list)
    differs: list[int] = field(default_factory=list)
    # Per autonomous success: steps compared, and steps on which the two agree.
    success_steps: list[int] = field(default_factory=list)
    agreeing: list[int] = field(default_factory=list)


@dataclass
class ShadowEvidence:
    version: str
    champion_version: str | None
    tasks: dict[str, TaskEvidence]
    # Steps logged, and episodes of the log not (yet) in the store.
    logged_steps: int
    unmatched_episodes: int
    counts: dict[str, int]


def collect(settings: Settings, run: ShadowRun, config: ReportConfig = ReportConfig()):
    """The shadow run's evidence so far: its log joined with the ingested episodes."""
    log = read_shadow_log(settings.shadow_log, run.version)
    if run.champion_version is not None:
        log = log[log["served_version"] == run.champion_version]
    with session_scope(settings.db_url) as session:
        episodes = {
            e.source_episode_uuid: (e.id, e.data_file, e.outcome, e.n_interventions)
            for e in session.scalars(
                select(Episode).where(
                    Episode.source_episode_uuid.in_(log["episode_uuid"].unique().tolist()),
                    Episode.status == "ok",
                    Episode.data_file.is_not(None),
                )
            )
        }
    evidence = ShadowEvidence(
        version=run.version,
        champion_version=run.champion_version,
        tasks={},
        logged_steps=len(log),
        unmatched_episodes=int(sum(u not in episodes for u in log["episode_uuid"].unique())),
        counts=read_counts(settings.shadow_log, run.version),
    )
    log = log[log["episode_uuid"].isin(list(episodes))]
    if log.empty:
        return evidence
    ids = {uuid: e[0] for uuid, e in episodes.items()}
    frames = EpisodeStore(settings.episode_store).read_frames(
        sorted({ids[u] for u in log["episode_uuid"]}),
        data_files={e[0]: e[1] for e in episodes.values()},
    )
    frames = frames[[EPISODE_ID, FRAME_INDEX, TIMESTAMP, ACTION, CONTROL_SOURCE]]
    log = log.assign(**{EPISODE_ID: log["episode_uuid"].map(ids), FRAME_INDEX: log["step"]})
    joined = log.merge(frames, on=[EPISODE_ID, FRAME_INDEX], how="inner")
    outcome = {e[0]: (e[2], e[3]) for e in episodes.values()}
    for (task, episode_id), steps in joined.groupby(["task", EPISODE_ID], sort=True):
        found = evidence.tasks.setdefault(task, TaskEvidence(task))
        _add_episode(found, steps.sort_values(FRAME_INDEX), outcome[episode_id], config)
    return evidence


def _add_episode(found: TaskEvidence, steps: pd.DataFrame, outcome, config: ReportConfig):
    found.episodes += 1
    shadow = np.stack(steps["shadow_action"].to_numpy()).astype(np.float32)
    served = np.stack(steps["served_action"].to_numpy()).astype(np.float32)
    executed = np.stack(steps[ACTION].to_numpy()).astype(np.float32)
    source = steps[CONTROL_SOURCE].to_numpy()
    by_operator = source == CONTROL_OPERATOR
    if by_operator.any():
        found.operator_steps += int(by_operator.sum())
        found.candidate_distance.append(float(_rms(shadow - executed)[by_operator].mean()))
        found.champion_distance.append(float(_rms(served - executed)[by_operator].mean()))
    apart = _rms(shadow - served)
    starts = np.flatnonzero(by_operator & np.r_[False, source[:-1] == CONTROL_POLICY])
    if len(starts):
        times = steps[TIMESTAMP].to_numpy()
        differs = 0
        for start in starts:
            window = (times >= times[start] - config.pre_takeover_s) & (times < times[start])
            window &= source == CONTROL_POLICY
            differs += bool(window.any() and apart[window].mean() > config.tolerance)
        found.takeovers.append(len(starts))
        found.differs.append(differs)
    status, interventions = outcome
    if status == "success" and not interventions and not by_operator.any():
        found.success_steps.append(len(apart))
        found.agreeing.append(int((apart <= config.tolerance).sum()))


def _rms(difference: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(difference**2, axis=1))


def interval(
    numerator: Sequence[float],
    denominator: Sequence[float] | None = None,
    *,
    confidence: float,
    alternative: str = "two-sided",
    seed: int = 0,
) -> tuple[float, float, float] | None:
    """(estimate, low, high) of sum(numerator) / sum(denominator) (a mean without one) by a
    percentile bootstrap over episodes; None without values, the estimate alone (low = high)
    from one episode."""
    x = np.asarray(numerator, dtype=float)
    n = np.ones_like(x) if denominator is None else np.asarray(denominator, dtype=float)
    if len(x) == 0 or n.sum() == 0:
        return None
    estimate = float(x.sum() / n.sum())
    if len(x) < 2:
        return estimate, estimate, estimate
    from scipy.stats import bootstrap

    result = bootstrap(
        (x, n),
        lambda a, b, axis=-1: a.sum(axis=axis) / b.sum(axis=axis),
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        alternative=alternative,
        method="percentile",
        n_resamples=4999,
        random_state=seed,
    )
    low, high = result.confidence_interval
    return estimate, float(low), float(high)


def summarise(evidence: ShadowEvidence, config: ReportConfig = ReportConfig()) -> dict:
    """The report as the API, the candidate page and the CLI show it."""
    c = config.confidence

    def shown(value):
        return None if value is None else {"value": value[0], "ci": [value[1], value[2]]}

    tasks = {}
    for task, t in sorted(evidence.tasks.items()):
        difference = [a - b for a, b in zip(t.candidate_distance, t.champion_distance, strict=True)]
        tasks[task] = {
            "episodes": t.episodes,
            "operator_steps": t.operator_steps,
            "candidate_operator_distance": shown(interval(t.candidate_distance, confidence=c)),
            "champion_operator_distance": shown(interval(t.champion_distance, confidence=c)),
            "distance_difference": shown(interval(difference, confidence=c)),
            "takeovers": int(sum(t.takeovers)),
            "differs_before_takeover": shown(interval(t.differs, t.takeovers, confidence=c)),
            "autonomous_successes": len(t.success_steps),
            "agreement_on_successes": shown(interval(t.agreeing, t.success_steps, confidence=c)),
        }
    return {
        "version": evidence.version,
        "champion_version": evidence.champion_version,
        "config": {
            "tolerance": config.tolerance,
            "pre_takeover_s": config.pre_takeover_s,
            "confidence": config.confidence,
        },
        "logged_steps": evidence.logged_steps,
        "unmatched_episodes": evidence.unmatched_episodes,
        "counts": evidence.counts,
        "tasks": tasks,
    }
