"""A rollout that pauses for a fleet manager (a stage's cap, a count mismatch), what the
manager does with it, and the guardrails that halt it at once."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from cli import app
from services.api.main import create_app
from services.approval.users import add_user
from services.nights import rollout_under_way
from services.readmodel.rollouts import rollouts_overview
from services.rollout.controller import RolloutError, halt_rollout, step_rollout
from services.rollout.manager import advance_rollout, resume_rollout
from services.serving.credentials import issue_fleet_credentials
from services.serving.robots import record_heartbeat
from services.store import session_scope
from services.store.models import AuditEvent, Candidate, Episode, IngestRun, Rollout, utcnow
from tests.rollout.test_staged import _robots, _shift_window
from tests.rollout.test_staged import rollout as rollout  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(settings):
    """A canary of one robot works 3 episodes a window; its stage is capped at 6."""
    return settings.updated(rollout={"min_episodes": 3, "max_episodes": 6})


def _audit(settings, action: str) -> list[AuditEvent]:
    with session_scope(settings.db_url) as session:
        return session.scalars(select(AuditEvent).where(AuditEvent.action == action)).all()


def _as_good_window(settings) -> None:
    # like the champion's robots: one failure, three takeovers in three episodes
    _shift_window(settings, candidate_interventions=3, candidate_failures=1)


def test_an_undecided_stage_pauses_at_its_cap_and_the_controller_leaves_it(settings, rollout):
    for expected in ("continue", "pause"):
        _as_good_window(settings)
        window = step_rollout(settings)
        assert window["decision"] == expected
    assert "reached its cap (6 of at most 6 candidate episodes)" in window["reason"]
    [paused] = _audit(settings, "pause-rollout")
    assert paused.after == {"state": "paused", "stage": "canary", "cause": "cap"}
    with session_scope(settings.db_url) as session:
        shown = rollouts_overview(session)["rollouts"][0]
    assert shown["state"] == "paused" and "cap" in shown["reason"]
    assert shown["stages"][0]["spec"]["max_episodes"] == 6
    before = _robots(settings)
    _as_good_window(settings)
    assert step_rollout(settings)["decision"] == "paused"  # nothing more while paused
    assert _robots(settings) == before
    with pytest.raises(RolloutError, match="nothing to halt"):  # halting it is possible
        halt_rollout(settings, actor="fatima", reason="stop")
        halt_rollout(settings, actor="fatima", reason="twice")


def test_a_fleet_manager_resumes_a_paused_rollout_with_more_room(settings, rollout):
    for _ in range(2):
        _as_good_window(settings)
        step_rollout(settings)
    resumed = resume_rollout(settings, actor="fatima", reason="one more shift", episodes=3)
    assert resumed.state == "in_progress"
    assert _audit(settings, "resume-rollout")[0].after["max_episodes"] == 9
    with pytest.raises(RolloutError, match="not paused"):
        advance_rollout(settings, actor="fatima", reason="the controller is still deciding")
    _as_good_window(settings)
    assert step_rollout(settings)["decision"] == "next stage"  # the tests decided in the room


def test_a_fleet_manager_advances_a_paused_rollout_by_hand(settings, rollout):
    for _ in range(2):
        _as_good_window(settings)
        step_rollout(settings)
    advanced = advance_rollout(settings, actor="fatima", reason="matches the champion")
    assert advanced.state == "in_progress" and advanced.current_stage == 1
    with session_scope(settings.db_url) as session:
        stages = session.get(Rollout, rollout.id).stages
    assert [s["outcome"] for s in stages[:2]] == ["advanced", None]
    assert _audit(settings, "advance-rollout")[0].actor == "fatima"
    halt_rollout(settings, actor="fatima", reason="stop")
    with pytest.raises(RolloutError, match="no rollout is paused"):
        resume_rollout(settings, actor="fatima", reason="again")


def test_only_a_fleet_manager_resumes_or_advances_through_the_api(settings, rollout):
    with session_scope(settings.db_url, write=True) as session:
        tokens = {
            r: add_user(session=session, name=r, role=r) for r in ("engineer", "fleet-manager")
        }
    api = TestClient(create_app())
    for _ in range(2):
        _as_good_window(settings)
        step_rollout(settings)
    body = {"reason": "one more shift", "episodes": 3}
    engineer = {"Authorization": f"Bearer {tokens['engineer']}"}
    manager = {"Authorization": f"Bearer {tokens['fleet-manager']}"}
    assert api.post("/rollouts/resume", json=body, headers=engineer).status_code == 403
    resumed = api.post("/rollouts/resume", json=body, headers=manager)
    assert resumed.status_code == 200 and resumed.json()["state"] == "in_progress"
    assert resumed.json()["stages"][0]["spec"]["max_episodes"] == 9
    refused = api.post("/rollouts/advance", json={"reason": "go"}, headers=manager)
    assert refused.status_code == 409 and "not paused" in refused.json()["detail"]


def _ingest(settings, robot: str, *, episodes: int, run: str = "run-1", done=True) -> None:
    """An ingest run that found ``episodes`` logs of the candidate from ``robot``."""
    with session_scope(settings.db_url, write=True) as session:
        session.add(IngestRun(id=run, source="test", finished_at=utcnow() if done else None))
        session.flush()
        for i in range(episodes):
            session.add(
                Episode(
                    id=f"{run}-{robot}-{i}",
                    content_hash=f"{run}-{robot}-{i}",
                    robot_id=robot,
                    policy_version="2",
                    outcome="success",
                    source_uri="test",
                    source_format="test",
                    ingest_run_id=run,
                )
            )


def test_counts_the_ingested_logs_do_not_bear_out_pause_instead_of_advancing(settings, rollout):
    [canary] = rollout.stages[0]["robots"]
    _shift_window(settings, candidate_interventions=0, candidate_failures=0)
    _ingest(settings, canary, episodes=0)  # the canary's 3 reported episodes never arrived
    window = step_rollout(settings)
    assert window["decision"] == "pause"
    assert (
        f"{canary} reported 3 episodes (0 failures, 0 interventions), 0 ingested"
        in (window["reason"])
    )
    [flag] = _audit(settings, "count-mismatch")
    assert flag.after["mismatched"] == [canary]
    assert _audit(settings, "pause-rollout")[0].after["cause"] == "count-mismatch"
    with session_scope(settings.db_url) as session:
        stage = rollouts_overview(session)["rollouts"][0]["stages"][0]
    assert stage["counts"]["robots"][canary]["reported"]["episodes"] == 3
    # the fleet manager looked into it: resuming accepts the counts for this stage
    resume_rollout(settings, actor="fatima", reason="logs lost in a disk swap, checked")
    _shift_window(settings, candidate_interventions=0, candidate_failures=0)
    assert step_rollout(settings)["decision"] == "next stage"


def test_counts_that_match_within_the_tolerance_let_the_stage_advance(settings, rollout):
    [canary] = rollout.stages[0]["robots"]
    _shift_window(settings, candidate_interventions=0, candidate_failures=0)
    _ingest(settings, canary, episodes=3)
    # a run still going (tonight's, say) holds logs whose heartbeats are newer than the cut
    _shift_window(settings, candidate_interventions=0, candidate_failures=0)
    _ingest(settings, canary, episodes=3, run="run-2", done=False)
    window = step_rollout(settings)
    assert window["decision"] == "next stage"
    assert window["stage"] == "canary"


def test_an_emergency_stop_on_a_candidate_robot_halts_the_rollout_in_the_request(settings, rollout):
    api = TestClient(create_app())
    [canary] = rollout.stages[0]["robots"]
    with session_scope(settings.db_url, write=True) as session:
        keys = issue_fleet_credentials(
            session=session, robot_ids=list(_robots(settings)), tasks=["pick-place"], actor="t"
        )

    def post(robot_id, **report):
        return api.post(
            f"/robots/{robot_id}/heartbeats",
            headers={"Authorization": f"Bearer {keys[robot_id]}"},
            json={"heartbeat_id": str(uuid.uuid4()), "successes": 1, "failures": 0}
            | {"interventions": 0, "active_seconds": 10.0, **report},
        )

    champion_robot = next(r for r in _robots(settings) if r != canary)
    calm = post(champion_robot, policy_version="1", safety_events=2)
    assert calm.status_code == 201, calm.text  # a champion robot's event is not the candidate's
    assert rollout_under_way(settings) is not None
    answer = post(canary, policy_version="2", emergency_stop=True)
    assert answer.status_code == 201 and answer.json()["model_version"] == "1"  # at once
    assert set(_robots(settings).values()) == {"1"}
    with session_scope(settings.db_url) as session:
        done = session.get(Rollout, rollout.id)
        assert done.state == "halted" and "emergency stop" in done.reason
        assert session.get(Candidate, "c1").status == "rolled_back"
    [halt] = _audit(settings, "halt-rollout")
    assert halt.actor == "guardrail" and canary in halt.reason


def test_a_safety_event_stored_another_way_halts_at_the_next_window(settings, rollout):
    [canary] = rollout.stages[0]["robots"]
    with session_scope(settings.db_url, write=True) as session:
        record_heartbeat(
            session=session,
            robot_id=canary,
            policy_version="2",
            episodes=1,
            active_seconds=60.0,
            safety_events=1,
        )
    window = step_rollout(settings)
    assert window["decision"] == "halt" and "1 safety event(s)" in window["reason"]
    assert set(_robots(settings).values()) == {"1"}


def test_the_cli_shows_a_paused_rollout_and_a_fleet_manager_resumes_it(
    settings, rollout, monkeypatch
):
    with session_scope(settings.db_url, write=True) as session:
        fatima = add_user(session=session, name="fatima", role="fleet-manager")
        eve = add_user(session=session, name="eve", role="engineer")
    for _ in range(2):
        _as_good_window(settings)
        step_rollout(settings)
    runner = CliRunner()
    shown = json.loads(runner.invoke(app, ["rollout", "status", "--json"]).output)
    assert shown["rollouts"][0]["state"] == "paused"
    monkeypatch.setenv("FLYWHEEL_TOKEN", eve)
    refused = runner.invoke(app, ["rollout", "resume", "--reason", "go on"])
    assert refused.exit_code == 1 and "fleet manager" in refused.output
    monkeypatch.setenv("FLYWHEEL_TOKEN", fatima)
    done = runner.invoke(app, ["rollout", "resume", "--reason", "go on", "--episodes", "6"])
    assert done.exit_code == 0 and f"resumed rollout {rollout.id}" in done.output
    refused = runner.invoke(app, ["rollout", "advance", "--reason", "now"])
    assert refused.exit_code == 1 and "not paused" in refused.output


def test_a_night_sees_the_rollout_still_under_way_and_its_candidate_waits(settings, rollout):
    assert (
        rollout_under_way(settings) == f"rollout {rollout.id} of model 2 is in progress at canary"
    )
    for _ in range(2):
        _as_good_window(settings)
        step_rollout(settings)
    assert rollout_under_way(settings).endswith("is paused at canary")
    halt_rollout(settings, actor="fatima", reason="enough")
    assert rollout_under_way(settings) is None
