"""The promotion gate: is the candidate better than the champion, with evidence?

Verdicts:
- ``pass``: better overall by a one-sided exact McNemar test at ``alpha`` on the paired
  seeds, and non-inferior on every task: the one-sided lower confidence bound of the task's
  success difference (paired bootstrap) lies above ``-margin``. The per-task bounds are
  Bonferroni-corrected (each at ``alpha / tasks``), so that with many tasks one of them
  does not pass by luck.
- ``fail``: not better (the point estimate is not above the champion's), or a task's
  success rate falls more than ``margin`` below the champion's. A failing candidate never
  reaches the fleet.
- ``inconclusive``: better on the point estimate but without enough evidence, overall or
  for some task's non-inferiority; it goes to a human and is never approved automatically.
With no champion yet, the first candidate passes: anything beats a fleet with no policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import select

from services.evaluation.closed_loop import TaskEvaluation
from services.evaluation.stats import mcnemar_greater, paired_difference_lower_bound, wilson
from services.store import record_audit, session_scope
from services.store.models import Candidate, Decision

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class GateConfig:
    # Significance level of the one-sided paired test that the candidate is better.
    alpha: float = 0.05
    # Largest drop in any task's success rate (absolute) that still counts as no regression.
    margin: float = 0.10

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")


@dataclass(frozen=True)
class GateVerdict:
    verdict: str
    reason: str
    numbers: dict


def judge(evaluations: list[TaskEvaluation], config: GateConfig = GateConfig()) -> GateVerdict:
    cand_k = sum(e.candidate.successes for e in evaluations)
    n = sum(e.candidate.n for e in evaluations)
    numbers: dict = {
        "config": asdict(config),
        "candidate": _rate_dict(cand_k, n),
        "tasks": {
            e.task: {
                "candidate": _rate_dict(e.candidate.successes, e.candidate.n),
                "champion": _rate_dict(e.champion.successes, e.champion.n) if e.champion else None,
                "candidate_only": e.candidate_only,
                "champion_only": e.champion_only,
            }
            for e in evaluations
        },
    }
    if any(e.champion is None for e in evaluations):
        return GateVerdict(PASS, "no champion yet: the first policy becomes the champion", numbers)
    if not evaluations:
        return GateVerdict(
            INCONCLUSIVE, "no closed-loop evidence: no task has a simulator twin", numbers
        )

    champ_k = sum(e.champion.successes for e in evaluations)
    b = sum(e.candidate_only for e in evaluations)
    c = sum(e.champion_only for e in evaluations)
    p_value = mcnemar_greater(b, c)
    numbers.update(
        champion=_rate_dict(champ_k, n), candidate_only=b, champion_only=c, p_value=p_value
    )

    regressions = [
        f"{e.task} {e.candidate.value:.0%} vs {e.champion.value:.0%}"
        for e in evaluations
        if e.champion.value - e.candidate.value > config.margin
    ]
    if regressions:
        return GateVerdict(
            FAIL,
            f"regresses beyond the {config.margin:.0%} margin: {'; '.join(regressions)}",
            numbers,
        )
    summary = f"{cand_k}/{n} vs champion {champ_k}/{n}, McNemar p={p_value:.3g}"
    if cand_k <= champ_k:
        return GateVerdict(FAIL, f"not better than the champion: {summary}", numbers)
    if p_value >= config.alpha:
        return GateVerdict(
            INCONCLUSIVE, f"better but not significant at {config.alpha}: {summary}", numbers
        )
    per_task_alpha = config.alpha / len(evaluations)
    unproven = []
    for e in evaluations:
        bound = paired_difference_lower_bound(
            e.candidate_outcomes, e.champion_outcomes, confidence=1 - per_task_alpha
        )
        numbers["tasks"][e.task]["difference_lower_bound"] = bound
        if bound <= -config.margin:
            unproven.append(f"{e.task} (difference >= {bound:+.0%})")
    numbers["per_task_alpha"] = per_task_alpha
    if unproven:
        return GateVerdict(
            INCONCLUSIVE,
            f"better overall ({summary}) but non-inferiority within {config.margin:.0%} "
            f"not shown for: {', '.join(unproven)}",
            numbers,
        )
    return GateVerdict(PASS, f"better with confidence: {summary}", numbers)


def judge_candidate(
    db_url: str,
    candidate_id: str,
    evaluations: list[TaskEvaluation],
    config: GateConfig = GateConfig(),
) -> GateVerdict:
    """``judge`` for a stored candidate: with no champion yet (no parent) the first policy
    passes even where no task could be run in closed loop (every task a field task)."""
    with session_scope(db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        first = candidate is not None and candidate.parent_version is None
    if first and not evaluations:
        return GateVerdict(PASS, "no champion yet: the first policy becomes the champion", {})
    return judge(evaluations, config)


def record_verdict(db_url: str, candidate_id: str, verdict: GateVerdict) -> GateVerdict:
    """Store the verdict once per candidate; a re-run returns the stored one unchanged."""
    with session_scope(db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None:
            raise LookupError(f"unknown candidate {candidate_id}")
        stored = next((d for d in _decisions(session, candidate_id) if d.kind == "gate"), None)
        if stored is not None:
            return GateVerdict(stored.verdict, stored.reason or "", stored.details)
        session.add(
            Decision(
                candidate_id=candidate_id,
                kind="gate",
                verdict=verdict.verdict,
                actor="gate",
                reason=verdict.reason,
                details=verdict.numbers,
            )
        )
        before = candidate.status
        candidate.status = {PASS: "passed", FAIL: "failed", INCONCLUSIVE: "inconclusive"}[
            verdict.verdict
        ]
        record_audit(
            session,
            actor="gate",
            action="gate",
            subject_type="candidate",
            subject_id=candidate_id,
            before={"status": before},
            after={"status": candidate.status, "verdict": verdict.verdict},
            reason=verdict.reason,
        )
    return verdict


def _decisions(session, candidate_id: str) -> list[Decision]:
    return list(session.scalars(select(Decision).where(Decision.candidate_id == candidate_id)))


def _rate_dict(k: int, n: int) -> dict:
    rate = wilson(k, n)
    return {"successes": k, "n": n, "rate": rate.value, "ci": [rate.low, rate.high]}
