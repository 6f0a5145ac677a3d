"""What the API lets in: a body over the limit is refused unread, a saturated robot side
answers 503 with Retry-After at once."""

import asyncio

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.api.errors import install_error_handlers
from services.api.limits import AdmitRobots
from services.api.main import create_app
from services.serving.credentials import issue_fleet_credentials
from services.store import session_scope
from services.store.models import Heartbeat

HEARTBEAT = {
    "heartbeat_id": "0b6a3c52-1f1e-4d7b-9a57-3c1f0e2d4b6a",
    "policy_version": None,
    "successes": 1,
    "failures": 0,
    "interventions": 0,
    "active_seconds": 1.0,
}


def _heartbeats(settings) -> int:
    with session_scope(settings.db_url) as session:
        return session.scalar(select(func.count()).select_from(Heartbeat))


def test_a_body_over_the_limit_gets_413_before_it_is_read_and_records_nothing(
    settings, monkeypatch
):
    monkeypatch.setenv("FLYWHEEL_API_MAX_BODY_BYTES", "2048")
    with session_scope(settings.db_url, write=True) as session:
        credentials = issue_fleet_credentials(
            session=session, robot_ids=["robot-00"], tasks=["pick-place"], actor="t"
        )
    client = TestClient(create_app())
    client.headers["Authorization"] = f"Bearer {credentials['robot-00']}"
    url = "/robots/robot-00/heartbeats"
    # The issue's 50 MB body in miniature: a valid heartbeat padded with an extra field.
    padded = httpx.Request("POST", "http://x", json={**HEARTBEAT, "pad": "x" * 4096}).content

    declared = client.post(url, content=padded, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.json() == {"detail": "request body larger than 2048 bytes"}

    chunks = (padded[i : i + 512] for i in range(0, len(padded), 512))  # no Content-Length
    streamed = client.post(url, content=chunks, headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert "larger than 2048 bytes" in streamed.json()["detail"]
    assert _heartbeats(settings) == 0

    assert client.post(url, json=HEARTBEAT).status_code == 201  # a normal heartbeat still is
    assert _heartbeats(settings) == 1


def test_robot_requests_beyond_the_limit_get_503_with_retry_after_at_once():
    entered, release = asyncio.Event(), asyncio.Event()

    async def robot_route(scope, receive, send):  # holds its turn until released
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    admitted = AdmitRobots(robot_route, concurrency=1, queue_s=0)

    async def scenario():
        transport = httpx.ASGITransport(app=admitted)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            first = asyncio.create_task(http.post("/robots/robot-00/heartbeats"))
            await entered.wait()
            turned_away = await http.post("/robots/robot-01/heartbeats")
            release.set()
            return await first, turned_away, await http.post("/robots/robot-01/heartbeats")

    first, turned_away, later = asyncio.run(scenario())
    assert first.status_code == 201
    assert turned_away.status_code == 503
    assert turned_away.headers["retry-after"] == "1"
    assert "busy" in turned_away.json()["detail"]
    assert later.status_code == 201  # the turn was given back


def test_other_paths_are_not_held_by_busy_robots():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    admitted = AdmitRobots(app, concurrency=1, queue_s=0)

    async def scenario():
        await admitted._turns.acquire()  # every robot turn taken
        transport = httpx.ASGITransport(app=admitted)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.get("/health"), await http.get("/robots/robot-00/assignment")

    health, robot = asyncio.run(scenario())
    assert health.status_code == 200 and robot.status_code == 503


def test_a_pool_that_stays_empty_is_answered_503_with_retry_after():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/busy")
    def busy():
        raise PoolTimeout("QueuePool limit of size 5 overflow 10 reached")

    answer = TestClient(app).get("/busy")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
