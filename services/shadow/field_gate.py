"""The gate for tasks without a simulator twin: judged on field evidence, on thresholds a
fleet manager set before the night.

A task in ``FLYWHEEL_FIELD_TASKS`` cannot be run in closed loop. Its evidence is the
candidate's shadow run on the fleet (``services/shadow/report.py``): on the operator's steps,
is it closer to the operator than the champion; on the champion's autonomous successes, does
it agree with the champion. The thresholds are a fleet manager's (``flywheel field-gate
set``), stored as numbered versions and audited; a night uses the newest one set before it
began, never one set after seeing the evidence.

Per field task, with one-sided bootstrap bounds over episodes at ``alpha / tasks`` (as the
closed-loop gate corrects its per-task bounds):

- ``fail``: a threshold is missed with confidence (the distance difference's lower bound is
  above ``max_distance_difference``, or the agreement's upper bound below ``min_agreement``);
- ``pass``: every threshold is met with confidence, on at least ``min_episodes`` episodes;
- ``inconclusive``: anything else, including too few episodes, and always when no thresholds
  were set: the candidate goes to a fleet manager.

A candidate that passes on field evidence starts its rollout at the canary stage, where the
sequential tests on the robots decide (``services/rollout/controller.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.evaluation.gate import FAIL, INCONCLUSIVE, PASS, GateVerdict
from services.shadow.report import ShadowEvidence, interval
from services.store import record_audit
from services.store.models import FieldGateThresholds


@dataclass(frozen=True)
class FieldThresholds:
    # Shadow episodes per field task, at least.
    min_episodes: int = 20
    # On operator steps: the candidate's RMS distance to the operator minus the champion's,
    # at most this (0: closer than the champion, with confidence; 0.02: no more than 0.02
    # farther).
    max_distance_difference: float = 0.0
    # On the champion's autonomous successes: the share of steps the candidate agrees on,
    # at least this...
    min_agreement: float = 0.5
    # ...shown on at least this many successes (fewer: not shown, inconclusive).
    min_successes: int = 5
    # Significance of each one-sided bound, before the per-task correction.
    alpha: float = 0.05

    def __post_init__(self) -> None:
        if self.min_episodes < 2:
            raise ValueError("min_episodes must be at least 2 (an interval needs two episodes)")
        if self.min_successes < 2:
            raise ValueError("min_successes must be at least 2 (an interval needs two episodes)")
        if not 0 <= self.min_agreement <= 1:
            raise ValueError(f"min_agreement must be in [0, 1], got {self.min_agreement}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")

    @classmethod
    def from_json(cls, values: dict) -> FieldThresholds:
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown field-gate thresholds {unknown}")
        return cls(**values)


def set_thresholds(
    *, session: Session, thresholds: FieldThresholds, actor: str, reason: str | None
) -> FieldGateThresholds:
    """Store a new version of the thresholds (the old ones stay, for the nights they judged)."""
    previous = current_thresholds(session=session)
    row = FieldGateThresholds(thresholds=asdict(thresholds), set_by=actor, reason=reason)
    session.add(row)
    session.flush()
    record_audit(
        session,
        actor=actor,
        action="field_gate_thresholds",
        subject_type="field_gate",
        subject_id=str(row.version),
        before=previous.thresholds if previous is not None else None,
        after=row.thresholds,
        reason=reason,
    )
    return row


def current_thresholds(
    *, session: Session, before: datetime | None = None
) -> FieldGateThresholds | None:
    """The newest version, or the newest set before ``before``."""
    query = select(FieldGateThresholds).order_by(FieldGateThresholds.version.desc())
    if before is not None:
        query = query.where(FieldGateThresholds.set_at <= before)
    return session.scalar(query)


def judge_field(
    evidence: ShadowEvidence,
    tasks: list[str],
    thresholds: FieldThresholds | None,
    thresholds_version: int | None = None,
) -> GateVerdict:
    """The field verdict on ``tasks`` from a shadow run's evidence."""
    numbers: dict = {
        "thresholds": asdict(thresholds) if thresholds else None,
        "thresholds_version": thresholds_version,
        "shadow_version": evidence.version,
        "tasks": {},
    }
    if thresholds is None:
        return GateVerdict(
            INCONCLUSIVE,
            "no field-gate thresholds were set before the night (flywheel field-gate set): "
            "a fleet manager decides",
            numbers,
        )
    alpha = thresholds.alpha / len(tasks)
    numbers["per_task_alpha"] = alpha
    verdicts = {}
    for task in tasks:
        found = evidence.tasks.get(task)
        task_numbers, verdict, why = _judge_task(found, thresholds, alpha)
        numbers["tasks"][task] = {**task_numbers, "verdict": verdict, "reason": why}
        verdicts[task] = (verdict, why)
    failed = [f"{t}: {why}" for t, (v, why) in verdicts.items() if v == FAIL]
    if failed:
        return GateVerdict(FAIL, "field evidence against it: " + "; ".join(failed), numbers)
    open_ = [f"{t}: {why}" for t, (v, why) in verdicts.items() if v == INCONCLUSIVE]
    if open_:
        return GateVerdict(INCONCLUSIVE, "field evidence not enough: " + "; ".join(open_), numbers)
    return GateVerdict(PASS, "field evidence meets the thresholds on " + ", ".join(tasks), numbers)


def _judge_task(found, thresholds: FieldThresholds, alpha: float) -> tuple[dict, str, str]:
    episodes = found.episodes if found else 0
    numbers: dict = {"episodes": episodes}
    if episodes < thresholds.min_episodes:
        why = f"{episodes} shadow episodes, fewer than the {thresholds.min_episodes} asked for"
        return numbers, INCONCLUSIVE, why
    difference = [
        a - b for a, b in zip(found.candidate_distance, found.champion_distance, strict=True)
    ]
    confidence = 1 - alpha
    low = interval(difference, confidence=confidence, alternative="greater")
    high = interval(difference, confidence=confidence, alternative="less")
    agree_low = interval(
        found.agreeing, found.success_steps, confidence=confidence, alternative="greater"
    )
    agree_high = interval(
        found.agreeing, found.success_steps, confidence=confidence, alternative="less"
    )
    numbers.update(
        distance_difference=None if low is None else low[0],
        distance_difference_bounds=None if low is None else [low[1], high[2]],
        agreement=None if agree_low is None else agree_low[0],
        agreement_bounds=None if agree_low is None else [agree_low[1], agree_high[2]],
    )
    limit, floor = thresholds.max_distance_difference, thresholds.min_agreement
    if low is not None and low[1] > limit:
        return numbers, FAIL, f"farther from the operator than the champion (>= {low[1]:+.3f})"
    if agree_high is not None and agree_high[2] < floor:
        return numbers, FAIL, f"agrees with the champion's successes on <= {agree_high[2]:.0%}"
    unproven = []
    if high is None:
        unproven.append("no operator steps to compare")
    elif high[2] > limit:
        unproven.append(f"distance difference <= {high[2]:+.3f}, not <= {limit:+.3f}")
    successes = len(found.success_steps)
    if agree_low is None or successes < thresholds.min_successes:
        unproven.append(
            f"{successes} autonomous successes to compare, fewer than {thresholds.min_successes}"
        )
    elif agree_low[1] < floor:
        unproven.append(f"agreement >= {agree_low[1]:.0%}, not >= {floor:.0%}")
    if unproven:
        return numbers, INCONCLUSIVE, "; ".join(unproven)
    return numbers, PASS, "meets the thresholds"


def combine(
    closed_loop: GateVerdict | None,
    field: GateVerdict,
    field_tasks: list[str],
    closed_tasks: list[str],
) -> GateVerdict:
    """One verdict from the closed-loop gate (twin tasks) and the field gate (the others):
    fail if either fails, pass if both pass, else inconclusive."""
    numbers = {
        "evidence": {"closed_loop": closed_tasks, "field": field_tasks},
        "field": field.numbers,
    }
    if closed_loop is not None:
        numbers.update(closed_loop.numbers)
    parts = [v for v in (closed_loop, field) if v is not None]
    verdicts = {v.verdict for v in parts}
    verdict = FAIL if FAIL in verdicts else PASS if verdicts == {PASS} else INCONCLUSIVE
    reasons = (
        [f"closed loop on {', '.join(closed_tasks)}: {closed_loop.reason}"]
        if closed_loop is not None
        else []
    )
    reasons.append(f"field on {', '.join(field_tasks)}: {field.reason}")
    return GateVerdict(verdict, "; ".join(reasons), numbers)
