"""A simulated robot's HTTP client against the real API on a socket: it sends its own
credential, and a heartbeat whose answer was lost is sent again and counted once."""

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
