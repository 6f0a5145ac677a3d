"""The rollout watcher flow (one controller step per run) and its interval deployment, on a
real (temporary) Prefect server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import select

from flows.deploy import deploy_rollout_watcher
from flows.rollout import watch_rollouts
from services.rollout.controller import halt_rollout, start_rollout
from services.serving.robots import provision_robots, record_heartbeat
from services.store import session_scope
from services.store.models import Robot, Rollout
from tests.conftest import add_candidate
from tests.notify.receiver import Receiver

pytestmark = pytest.mark.slow


def test_each_run_of_the_watcher_is_one_decision_window(settings, register, prefect_harness):
    with session_scope(settings.db_url) as session:
        provision_robots(session=session, robot_ids=["r0", "r1", "r2", "r3"], tasks=["toy-reach"])
    for i, parent in enumerate([None, "1"]):
        version = register(settings, candidate_id=f"c{i}").version
        add_candidate(settings.db_url, f"c{i}", version=version, status="approved", parent=parent)
    start_rollout(settings, "c0", actor="nightly")  # the first policy: the whole fleet
    rollout = start_rollout(settings, "c1", actor="nightly")  # version 2 at the canary
    assert watch_rollouts() == {
        "rollout": rollout.id,
        "stage": "canary",
        "decision": "no new data",
    }
    with session_scope(settings.db_url) as session:
        for robot in session.scalars(select(Robot)).all():  # canary on 2, control on 1
            record_heartbeat(
                session=session,
                robot_id=robot.id,
                policy_version=robot.policy_version,
                episodes=3,
                failures=1,
                interventions=3,
                active_seconds=180.0,
            )
    # One window of 3 canary episodes: far from the stage's minimum exposure, no breach.
    assert watch_rollouts()["decision"] == "continue"
    with session_scope(settings.db_url) as session:
        stage = session.get(Rollout, rollout.id).stages[0]
        assert len(stage["windows"]) == 1 and stage["episodes"] == 3
    assert watch_rollouts()["decision"] == "no new data"  # nothing new since that window


def test_the_watcher_deployment_runs_on_an_interval_one_at_a_time(settings, prefect_harness):
    first = deploy_rollout_watcher(interval_s=300, work_pool="flywheel-test")
    again = deploy_rollout_watcher(interval_s=120, work_pool="flywheel-test")
    assert again == first  # registering again updates the same deployment
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(first)
    assert deployment.entrypoint == "flows/rollout.py:watch_rollouts"
    [schedule] = deployment.schedules
    assert schedule.schedule.interval == timedelta(seconds=120)
    assert deployment.global_concurrency_limit.limit == 1


def test_the_watcher_tells_the_webhook_of_a_halt(settings, register, prefect_harness, monkeypatch):
    with Receiver() as receiver:
        monkeypatch.setenv("FLYWHEEL_NOTIFY_WEBHOOK_URL", receiver.url)
        monkeypatch.setenv("FLYWHEEL_NOTIFY_FORMAT", "slack")
        assert watch_rollouts() is None  # no rollout; notifications start from here
        with session_scope(settings.db_url) as session:
            provision_robots(session=session, robot_ids=["r0", "r1"], tasks=["toy-reach"])
        for i, parent in enumerate([None, "1"]):
            version = register(settings, candidate_id=f"c{i}").version
            add_candidate(
                settings.db_url, f"c{i}", version=version, status="approved", parent=parent
            )
        start_rollout(settings, "c0", actor="nightly")
        rollout = start_rollout(settings, "c1", actor="nightly")
        halt_rollout(settings, actor="fatima", reason="e-stop on r0")
        watch_rollouts()
    [halt] = receiver.bodies
    assert halt["text"] == f"Rollout {rollout.id} of version 2 halted: e-stop on r0"
