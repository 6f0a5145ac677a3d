"""The decision rule a stage follows, one window at a time: the rule production runs and the
rule whose error rates are measured (``simulate.py``, docs/rollout.md).

Each window adds to every watched metric's log-likelihood ratio (``sequential.py``). Then:

- any metric's ratio at or above its upper bound: the candidate is worse, roll back;
- every metric's ratio at or below its lower bound (the tests accept "not worse") and at
  least ``min_episodes`` candidate episodes in the stage: advance (or, at a stage declared
  with ``pause``, wait for a fleet manager to advance it);
- otherwise, once the stage has reached its cap (``max_episodes`` candidate episodes or
  ``max_hours`` since it started): pause for a fleet manager, who resumes, advances or halts;
- otherwise: wait for the next window.

Evidence carries across stages. The window's log-likelihood ratio of each test is that of
the window's own counts, given the two groups' exposures in the window; the hypotheses ("the
candidate's rate is the champion's" against "it is r times / +d worse") are about the two
policies, not about how many robots run each. So when the next stage watches a metric with
the same test (same alpha, beta and degradation), the candidate and the champion stay the
same, and the comparison stays the same kind (candidate robots against champion robots in
the same period), the sum over both stages' windows is the log-likelihood ratio of all the
data so far, and Wald's bounds hold for it as they do within a stage: adding windows from a
bigger stage is just more looks, which the SPRT allows. A metric whose test differs at the
next stage starts again from zero: its ratio is for other hypotheses. The failure test's
baseline (the control group's failures so far) carries with it, for the same reason. The
last stage has no control group and watches nothing: entering it is the promotion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.rollout.sequential import NOT_WORSE, WORSE
from services.rollout.spec import METRICS, Test
from services.rollout.stages import Stage

ADVANCE, ROLLBACK, PAUSE, CONTINUE = "next stage", "rollback", "pause", "continue"
EMPTY = {"episodes": 0, "failures": 0, "interventions": 0, "hours": 0.0}


@dataclass(frozen=True)
class Judgement:
    stage: Stage  # the stage with the window counted in
    decision: str  # ADVANCE | ROLLBACK | PAUSE | CONTINUE
    reason: str | None = None  # why, for a rollback or a pause
    cause: str | None = None  # what paused it: cap | manual-gate
    worse: tuple[str, ...] = ()  # the metrics whose test says "worse"


def window_llr(
    metric: str, test: Test, treatment: Mapping, control: Mapping, control_total: Mapping
) -> float:
    """What one window adds to a metric's log-likelihood ratio (worse vs as good)."""
    if metric == "failures":
        return test.window_llr(
            treatment["failures"],
            treatment["episodes"],
            control_total["failures"],
            control_total["episodes"],
        )
    exposure = METRICS[metric]
    return test.window_llr(
        treatment[metric], treatment[exposure], control[metric], control[exposure]
    )


def judge(stage: Stage, treatment: Mapping, control: Mapping, *, hours: float) -> Judgement:
    """Count one window (``treatment``: the candidate's robots, ``control``: the champion's)
    into ``stage``, ``hours`` after the stage started, and decide."""
    spec = stage.plan
    total = dict(stage.control_total or {"episodes": 0, "failures": 0})
    total["episodes"] += control["episodes"]
    total["failures"] += control["failures"]
    llr = dict(stage.llr)
    for metric, test in spec.tests.items():
        llr[metric] = llr.get(metric, 0.0) + window_llr(metric, test, treatment, control, total)
    episodes = stage.episodes + treatment["episodes"]
    stage = stage.with_(episodes=episodes, llr=llr, control_total=total)
    verdicts = {m: t.decide(llr[m]) for m, t in spec.tests.items()}
    worse = [m for m, v in verdicts.items() if v == WORSE]
    if worse:
        reason = "; ".join(_bound(stage, m, "upper") for m in worse)
        return Judgement(stage, ROLLBACK, reason, worse=tuple(worse))
    if all(v == NOT_WORSE for v in verdicts.values()) and episodes >= spec.min_episodes:
        if spec.pause:
            return Judgement(
                stage,
                PAUSE,
                f"manual gate: the {stage.name} stage's tests accept the candidate "
                "as not worse; a fleet manager advances it",
                "manual-gate",
            )
        return Judgement(stage, ADVANCE)
    cap = capped(stage, hours)
    if cap:
        open_ = [m for m, v in verdicts.items() if v != NOT_WORSE]
        reason = f"the {stage.name} stage reached its cap ({cap}) " + (
            f"with no decision on {', '.join(open_)}: "
            + "; ".join(_bound(stage, m, "lower") for m in open_)
            if open_
            else f"before its minimum of {spec.min_episodes} candidate episodes"
        )
        return Judgement(stage, PAUSE, reason, "cap")
    return Judgement(stage, CONTINUE)


def carry(done: Stage, entering: Stage) -> Stage:
    """The next stage starts with the evidence of the one before, metric by metric where the
    test is the same (the module docstring says why that is sound)."""
    before, after = done.plan.tests, entering.plan.tests
    llr = {m: (done.llr.get(m, 0.0) if before.get(m) == t else 0.0) for m, t in after.items()}
    return entering.with_(llr=llr, control_total=done.control_total)


def capped(stage: Stage, hours: float) -> str | None:
    spec = stage.plan
    if spec.max_episodes is not None and stage.episodes >= spec.max_episodes:
        return f"{stage.episodes} of at most {spec.max_episodes} candidate episodes"
    if spec.max_hours is not None and hours >= spec.max_hours:
        return f"{hours:.1f} of at most {spec.max_hours:g} hours"
    return None


def _bound(stage: Stage, metric: str, which: str) -> str:
    test = stage.plan.tests[metric]
    bound = test.upper if which == "upper" else test.lower
    sign = ">=" if which == "upper" else "not yet <="
    return f"{metric} log-likelihood ratio {stage.llr[metric]:.2f} {sign} {bound:.2f}"
