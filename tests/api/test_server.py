"""The API on a real socket for the length of a block (the simulated shift's robots use it)."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.api.server import api_in_background
from services.store import session_scope
from services.store.models import Heartbeat
from tests.api.conftest import enroll_robots


def test_the_api_answers_over_http_inside_the_block_and_stops_after(settings):
    with api_in_background() as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{base_url}/live").json() == {"status": "ok"}
        anonymous = httpx.get(f"{base_url}/robots/robot-77/assignment")
        assert anonymous.status_code == 401 and "robot credential" in anonymous.text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/live")


def test_a_write_is_committed_before_its_answer_is_sent(settings, monkeypatch):
    # A slow commit (a busy database) must hold the answer back: a robot that reads its own
    # heartbeat's effect right after the 201 would otherwise see the store without it.
    enroll = enroll_robots(settings, ["robot-00"])
    commit = Session.commit

    def slow_commit(self):
        time.sleep(0.5)
        commit(self)

    monkeypatch.setattr(Session, "commit", slow_commit)
    beat = {
        "heartbeat_id": "0b6a4f3e-52f1-4a55-9d6e-2b1f6c0e9a11",
        "policy_version": None,
        "successes": 1,
        "failures": 0,
        "interventions": 0,
        "active_seconds": 20.0,
    }
    with api_in_background() as base_url:
        answer = httpx.post(
            f"{base_url}/robots/robot-00/heartbeats",
            json=beat,
            headers={"Authorization": f"Bearer {enroll['robot-00']}"},
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        monkeypatch.setattr(Session, "commit", commit)
        with session_scope(settings.db_url) as session:
            assert session.scalar(select(func.count()).select_from(Heartbeat)) == 1
