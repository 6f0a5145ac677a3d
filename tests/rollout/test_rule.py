"""The decision rule, window by window: advance on acceptance, roll back on a breach, pause
at a cap or a manual gate, and evidence carried to the next stage only for the same test."""

from __future__ import annotations

import pytest

from services.rollout.plan import RolloutPlan
from services.rollout.rule import ADVANCE, CONTINUE, PAUSE, ROLLBACK, carry, judge
from services.rollout.sequential import SPRT, ProportionSPRT
from services.rollout.spec import StageSpec

ROBOTS = ["r0", "r1", "r2", "r3"]


def _window(episodes: int, failures: int, interventions: int) -> dict:
    return {
        "episodes": episodes,
        "failures": failures,
        "interventions": interventions,
        "hours": episodes / 20,
    }


CONTROL = _window(12, 6, 12)  # three champion robots, four episodes each


def _canary(**limits):
    return RolloutPlan.of((0.25, 0.5, 1.0), **limits).stages("7", ROBOTS)


def test_a_better_candidate_advances_once_every_test_accepts_and_the_minimum_is_worked():
    stage = _canary(min_episodes=8)[0]
    first = judge(stage, _window(4, 0, 0), CONTROL, hours=0.2)
    assert all(first.stage.llr[m] <= -1.56 for m in ("failures", "interventions"))
    assert first.decision == CONTINUE  # accepted, but 4 of at least 8 episodes
    assert judge(first.stage, _window(4, 0, 0), CONTROL, hours=0.4).decision == ADVANCE


def test_one_metric_still_undecided_holds_the_stage_and_a_breach_rolls_back():
    stage = _canary()[0]
    # more failures than the champion's, no takeovers: only one test accepts
    held = judge(stage, _window(12, 9, 0), CONTROL, hours=0.6)
    assert held.stage.llr["interventions"] < -1.6 < held.stage.llr["failures"]
    assert held.decision == CONTINUE
    worse = judge(held.stage, _window(4, 4, 40), CONTROL, hours=0.8)
    assert worse.decision == ROLLBACK and "interventions log-likelihood ratio" in worse.reason


def test_a_stage_that_reaches_its_cap_undecided_pauses_and_says_why():
    stage = _canary(max_episodes=16)[0]
    # as good as the champion, with rare takeovers: the intervention test needs far more
    control = _window(12, 6, 3)
    for _ in range(3):
        judged = judge(stage, _window(4, 2, 1), control, hours=0.0)
        assert judged.decision == CONTINUE
        stage = judged.stage
    capped = judge(stage, _window(4, 2, 1), control, hours=0.0)
    assert capped.decision == PAUSE and capped.cause == "cap"
    assert "no decision on interventions" in capped.reason
    assert "16 of at most 16 candidate episodes" in capped.reason
    by_time = judge(_canary(max_hours=6.0)[0], _window(4, 2, 1), control, hours=6.5)
    assert by_time.decision == PAUSE and "6.5 of at most 6 hours" in by_time.reason


def test_a_manual_gate_pauses_where_the_stage_would_advance():
    spec = StageSpec(share=0.25, min_episodes=4, pause=True)
    stage = RolloutPlan((spec, StageSpec(share=1.0))).stages("7", ROBOTS)[0]
    judged = judge(stage, _window(4, 0, 0), CONTROL, hours=0.1)
    assert judged.decision == PAUSE and judged.cause == "manual-gate"


def test_evidence_carries_to_the_next_stage_only_for_the_same_test():
    canary, half, _ = _canary()
    done = judge(canary, _window(4, 0, 0), CONTROL, hours=0.2).stage
    entering = carry(done, half)
    assert entering.llr == done.llr and entering.control_total == done.control_total
    stricter = half.with_(
        spec=StageSpec(
            share=0.5,
            tests={"failures": ProportionSPRT(increase=0.1), "interventions": SPRT()},
        )
    )
    carried = carry(done, stricter)
    assert carried.llr["failures"] == 0.0  # other hypotheses: starts again
    assert carried.llr["interventions"] == done.llr["interventions"]


@pytest.mark.parametrize(
    "limits",
    [{"min_episodes": 0}, {"max_episodes": 5, "min_episodes": 6}, {"max_hours": 0}],
)
def test_impossible_limits_are_refused(limits):
    with pytest.raises(ValueError):
        RolloutPlan.of((0.5, 1.0), **limits)
