import json
from datetime import UTC, datetime

import numpy as np
import pytest
from mcap.reader import make_reader

from services.twin.autonomous import run_autonomous
from services.twin.tasks import make_env
from sim.episode import run_episode
from sim.fleet import Assignment, FleetConfig, run_shift
from sim.lab import record_lab_demos
from sim.operator import Operator, OperatorConfig


def _stalled(state, task):  # a policy that never moves
    return np.zeros(2, dtype=np.float32)


def _expert(state, task):
    return make_env("toy-reach").expert_action(state)


def _episode(policy, seed=3, config=OperatorConfig(patience=5, hold_steps=4, max_takeovers=2)):
    return run_episode(
        make_env("toy-reach"),
        seed,
        policy=policy,
        operator=Operator(config),
        robot_id="r",
        policy_version="1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        episode_uuid="u",
    )


def test_operator_takes_over_a_stalled_robot_and_hands_back():
    rec = _episode(_stalled)
    first = rec.interventions[0]
    assert first.reason == "no progress for 5 steps"
    assert first.end_step - first.start_step == 4  # handed back after hold_steps
    assert rec.control_source[first.start_step - 1] == "policy"
    assert all(s == "operator" for s in rec.control_source[first.start_step : first.end_step])
    assert rec.control_source[first.end_step] == "policy"
    assert rec.reasons[first.start_step] == first.reason
    # after the last allowed takeover the operator finishes the job
    assert len(rec.interventions) == 2 and rec.outcome == "success"
    operator_steps = {i for s in rec.interventions for i in range(s.start_step, s.end_step)}
    assert operator_steps == {i for i, s in enumerate(rec.control_source) if s == "operator"}


def test_a_good_policy_needs_no_operator():
    rec = _episode(_expert)
    assert rec.outcome == "success" and not rec.interventions
    assert set(rec.control_source) == {"policy"}


def test_autonomous_runs_are_deterministic_per_seed():
    env = make_env("toy-reach")
    assert run_autonomous(env, 7, _expert) == run_autonomous(env, 7, _expert)
    assert not run_autonomous(env, 7, _stalled).success


def test_lab_demos_only_cover_the_lab_workspace(tmp_path):
    paths = record_lab_demos(["toy-reach"], 5, tmp_path)
    assert len(paths) == 5 and all(p.parent == tmp_path / "lab" / "toy-reach" for p in paths)
    env = make_env("toy-reach")
    for path in paths:
        with open(path, "rb") as f:
            messages = list(make_reader(f).iter_messages())
        header = json.loads(messages[0][2].data)
        assert header["kind"] == "demo" and header["robot_id"] == "lab"
    seeds = range(20_000_000, 20_000_200)
    lab = [s for s in seeds if (env.reset(s), env.in_lab_workspace())[1]]
    assert 0 < len(lab) < len(seeds)  # the lab covers part of the workspace, not all of it


class _Client:
    def __init__(self) -> None:
        self.heartbeats = []
        self.heartbeat_ids = []

    def assignment(self, robot_id):
        if robot_id == "robot-01":
            return Assignment(version=None, policy=None)
        return Assignment(version="7", policy=_stalled)

    def heartbeat(self, robot_id, version, *, heartbeat_id, **counts):
        self.heartbeats.append((robot_id, version, counts))
        self.heartbeat_ids.append(heartbeat_id)


def test_a_shift_uploads_one_file_per_episode_and_is_reproducible(tmp_path):
    config = FleetConfig(robots=2, episodes_per_robot=3, tasks=("toy-reach",), window_rounds=2)
    client, windows = _Client(), []
    summary = run_shift(
        config, client, tmp_path / "a", night=2, after_window=lambda: windows.append(1)
    )
    assert summary.episodes == 3 and summary.idle_robots == ("robot-01",)
    assert summary.interventions >= 3
    # a heartbeat per episode; the controller looked once (after round 2 of 3)
    assert [(r, v, c["episodes"]) for r, v, c in client.heartbeats] == [("robot-00", "7", 1)] * 3
    assert sum(c["interventions"] for *_, c in client.heartbeats) == summary.interventions
    assert windows == [1]
    files = sorted((tmp_path / "a").rglob("*.mcap"))
    assert len(files) == 3 and all(f.parent.name == "night-002" for f in files)
    rerun_client = _Client()
    again = run_shift(config, rerun_client, tmp_path / "b", night=2)
    rerun = sorted((tmp_path / "b").rglob("*.mcap"))
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in rerun]
    # the shift run again reports the same heartbeats, which the server counts once
    assert (
        len(set(client.heartbeat_ids)) == 3 and rerun_client.heartbeat_ids == client.heartbeat_ids
    )
    assert again.steps == summary.steps


def test_unknown_task_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'pick-place'"):
        make_env("pick-plac")


@pytest.mark.slow
def test_metaworld_expert_solves_pick_place_and_lab_covers_half():
    env = make_env("pick-place")
    result = run_autonomous(env, 0, lambda s, t: env.expert_action(s))
    assert result.success and result.steps < env.max_steps
    inside = [(env.reset(s), env.in_lab_workspace())[1] for s in range(40)]
    assert 10 < sum(inside) < 30


def test_the_fleet_may_work_fewer_tasks_than_the_policy_serves(monkeypatch):
    from pydantic import ValidationError

    from services.config import Settings

    monkeypatch.setenv("FLYWHEEL_TASKS", '["reach", "push", "pick-place"]')
    assert Settings().fleet.shift_tasks == ("reach", "push", "pick-place")
    monkeypatch.setenv("FLYWHEEL_FLEET_TASKS", '["pick-place"]')
    assert Settings().fleet.shift_tasks == ("pick-place",)
    monkeypatch.setenv("FLYWHEEL_FLEET_TASKS", '["drawer-open"]')
    with pytest.raises(ValidationError, match="FLYWHEEL_TASKS does not list"):
        Settings()
