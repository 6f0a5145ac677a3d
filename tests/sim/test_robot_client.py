"""A simulated robot's HTTP client: against the real API on a socket, it sends its own
credential, and a heartbeat whose answer was lost is sent again and counted once; against a
busy API (a mock transport), it honours Retry-After and gives up after a bound."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from services.api.server import api_in_background
from services.serving.credentials import issue_fleet_credentials
from services.store import session_scope
from services.store.models import Heartbeat
from sim.robot_client import ApiFleetClient, RobotApiError

HEARTBEAT_ID = "5d8e0c1a-7b2f-4c3d-9e4f-0a1b2c3d4e5f"


class LosesTheFirstAnswer(httpx.HTTPTransport):
    """The first POST reaches the server, but its answer never comes back (a timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST" and not self.lost:
            self.lost += 1
            response.close()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


def test_a_heartbeat_whose_answer_was_lost_is_sent_again_and_counted_once(settings, tmp_path):
    with session_scope(settings.db_url, write=True) as session:
        credentials = issue_fleet_credentials(
            session=session, robot_ids=["robot-00"], tasks=["toy-reach"], actor="t"
        )
    transport = LosesTheFirstAnswer()
    with (
        api_in_background() as base_url,
        httpx.Client(base_url=base_url, transport=transport) as http,
    ):
        client = ApiFleetClient(http, tmp_path / "models", credentials, retry_delays=(0, 0))
        assert client.assignment("robot-00").version is None
        client.heartbeat(
            "robot-00",
            None,
            heartbeat_id=HEARTBEAT_ID,
            episodes=1,
            failures=0,
            interventions=0,
            active_seconds=2.5,
        )
        stranger = ApiFleetClient(http, tmp_path / "models", {"robot-00": "fwr_guess"})
        with pytest.raises(RobotApiError, match="401"):
            stranger.assignment("robot-00")
    assert transport.lost == 1
    with session_scope(settings.db_url) as session:
        assert session.scalars(select(Heartbeat.heartbeat_id)).all() == [HEARTBEAT_ID]


ASSIGNMENT = {"robot_id": "robot-00", "model_version": None, "model_uri": None, "checksum": None}


def _robot(tmp_path, answers: list[httpx.Response], attempts: int = 4):
    """A client whose API answers ``answers`` in turn; returns it, the requests, the waits."""
    seen, waits = [], []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    http = httpx.Client(transport=httpx.MockTransport(api), base_url="http://api")
    robot = ApiFleetClient(
        http, tmp_path, {"robot-00": "fwr_x"}, attempts=attempts, sleep=waits.append
    )
    return robot, seen, waits


def _beat(robot: ApiFleetClient) -> None:
    robot.heartbeat(
        "robot-00",
        None,
        heartbeat_id=HEARTBEAT_ID,
        episodes=3,
        failures=1,
        interventions=2,
        active_seconds=9,
    )


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
