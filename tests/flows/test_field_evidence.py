"""A task without a simulator twin, end to end: the candidate is shadowed on the next shift
and judged on that field evidence by the thresholds a fleet manager set before the night."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.config import Settings
from services.shadow.field_gate import FieldThresholds, set_thresholds
from services.shadow.log import read_counts, read_shadow_log
from services.store import session_scope
from services.store.models import Decision, Rollout, ShadowRun

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_jobs")]


@pytest.fixture
def field_settings(toy_settings, monkeypatch) -> Settings:
    """The toy task with no twin: Flywheel may not evaluate it in simulation."""
    monkeypatch.setenv("FLYWHEEL_FIELD_TASKS", '["toy-reach"]')
    return Settings()


def test_a_field_task_candidate_is_shadowed_on_a_shift_then_judged_on_it(field_settings):
    from flows.simulation import simulate_nights

    with session_scope(field_settings.db_url, write=True) as session:
        set_thresholds(
            session=session,
            thresholds=FieldThresholds(
                min_episodes=10, max_distance_difference=0.0, min_agreement=0.3, min_successes=2
            ),
            actor="fatima",
            reason="pilot",
        )
    first, second, third = simulate_nights(
        nights_to_run=3, robots=2, episodes_per_robot=8, lab_demos=6
    )
    # Night 0: the first policy passes with no twin and no champion to beat.
    assert first["champion_after"] == "1"
    # Night 1: the candidate is trained, not judged: it waits, shadowing, for a shift.
    assert second["outcome"].startswith("shadowing: candidate")
    assert second["candidate"]["status"] == "shadowing" and second["candidate"]["n"] == 0
    # Shift 2 ran it beside the champion on every step of its 16 episodes, none dropped.
    log = read_shadow_log(field_settings.shadow_log, "2")
    counts = read_counts(field_settings.shadow_log, "2")
    assert log["episode_uuid"].nunique() == 16 and set(log["served_version"]) == {"1"}
    assert counts["dropped"] == 0 and counts["logged"] == counts["offered"] == len(log)
    # Night 2 judged it on that shift's episodes with the thresholds of version 1.
    with session_scope(field_settings.db_url) as session:
        gate = session.scalar(
            select(Decision).where(
                Decision.kind == "gate", Decision.candidate_id == second["candidate"]["id"]
            )
        )
        run = session.scalar(select(ShadowRun))
        rolled_out = session.scalar(select(Rollout).where(Rollout.to_version == "2"))
    assert gate.details["evidence"] == {"closed_loop": [], "field": ["toy-reach"]}
    field = gate.details["field"]
    assert field["thresholds_version"] == 1
    assert field["report"]["tasks"]["toy-reach"]["episodes"] == 16
    assert run.state == "ended" and run.reason == f"judged: {gate.verdict}"
    # Seeded end to end, so the outcome is known: the candidate is far closer to the
    # operator than the champion (difference about -1.16, its bound well below 0), but the
    # champion finished one episode alone, and agreement needs two: inconclusive, which
    # FLYWHEEL_AUTO_APPROVE never approves. A fleet manager decides.
    toy = field["tasks"]["toy-reach"]
    assert toy["distance_difference_bounds"][1] < 0
    assert toy["reason"] == "1 autonomous successes to compare, fewer than 2"
    assert (
        gate.verdict == "inconclusive"
        and third["outcome"] == "gate inconclusive; approval awaiting"
    )
    assert rolled_out is None
