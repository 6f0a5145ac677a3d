"""The simulated robot honours a busy API's Retry-After, and gives up after a bound."""

import httpx
import pytest

from sim.robot_client import ApiFleetClient, RobotApiError

ASSIGNMENT = {"robot_id": "robot-00", "model_version": None, "model_uri": None, "checksum": None}


def _robot(tmp_path, answers: list[httpx.Response], attempts: int = 4):
    """A client whose API answers ``answers`` in turn; returns it, the requests, the waits."""
    seen, waits = [], []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    http = httpx.Client(transport=httpx.MockTransport(api), base_url="http://api")
    robot = ApiFleetClient(http, tmp_path, attempts=attempts, sleep=waits.append)
    return robot, seen, waits


def _beat(robot: ApiFleetClient) -> None:
    robot.heartbeat("robot-00", None, episodes=3, failures=1, interventions=2, active_seconds=9)


def test_a_busy_answer_is_retried_after_retry_after_with_jitter(tmp_path):
    busy = httpx.Response(503, headers={"Retry-After": "2"}, json={"detail": "busy"})
    slowed = httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "locked out"})
    robot, seen, waits = _robot(tmp_path, [busy, slowed, httpx.Response(201, json=ASSIGNMENT)])
    _beat(robot)
    assert len(seen) == 3
    assert len({r.content for r in seen}) == 1  # the same heartbeat each time
    assert 2 <= waits[0] <= 3 and 1 <= waits[1] <= 1.5


def test_a_robot_gives_up_after_its_attempts(tmp_path):
    busy = httpx.Response(503, headers={"Retry-After": "1"}, json={"detail": "busy"})
    robot, seen, waits = _robot(tmp_path, [busy], attempts=4)
    with pytest.raises(RobotApiError, match="503.*after 4 attempts"):
        _beat(robot)
    assert len(seen) == 4 and len(waits) == 3


def test_other_refusals_are_not_retried(tmp_path):
    robot, seen, waits = _robot(tmp_path, [httpx.Response(404, json={"detail": "no robot"})])
    with pytest.raises(RobotApiError, match="404"):
        robot.assignment("robot-00")
    assert len(seen) == 1 and waits == []
