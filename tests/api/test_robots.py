"""The robot-facing API over HTTP: every robot endpoint takes the robot's own credential,
refuses anyone else's and records nothing then; admins enroll, rotate and revoke."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.api.main import create_app
from services.store import session_scope
from services.store.models import AuditEvent, Heartbeat, Robot
from tests.api.conftest import enroll_robots, seed_review_store

BEAT = {
    "heartbeat_id": "3f1d2c4b-5a69-4e7d-8c0b-1a2b3c4d5e6f",
    "policy_version": None,
    "successes": 1,
    "failures": 1,
    "interventions": 1,
    "active_seconds": 20.0,
}
ENDPOINTS = [
    ("GET", "/robots/robot-00/assignment", None),
    ("POST", "/robots/robot-00/heartbeats", BEAT),
]


@pytest.fixture
def api(store_settings):
    client = TestClient(create_app())
    client.tokens = seed_review_store(store_settings)
    client.robots = enroll_robots(store_settings, ["robot-00", "robot-01", "robot-02"])
    with session_scope(store_settings.db_url, write=True) as session:
        session.get(Robot, "robot-02").credential_hash = None  # revoked
    return client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _recorded(settings) -> tuple:
    """What a refused request must leave as it was."""
    with session_scope(settings.db_url) as session:
        return (
            session.scalar(select(func.count()).select_from(Heartbeat)),
            session.scalar(select(func.count()).select_from(AuditEvent)),
            [r.last_seen for r in session.scalars(select(Robot).order_by(Robot.id))],
        )


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_every_robot_endpoint_refuses_all_but_the_robots_own_credential(
    api, store_settings, method, path, body
):
    before = _recorded(store_settings)
    refusals = {
        "missing": ({}, 401),
        "a user's token": (_bearer(api.tokens["admin"]), 401),
        "wrong": (_bearer("fwr_not-a-credential"), 401),
        "revoked": (_bearer(api.robots["robot-02"]), 401),
        "another robot's": (_bearer(api.robots["robot-01"]), 403),
    }
    for case, (headers, status) in refusals.items():
        answer = api.request(method, path, json=body, headers=headers)
        assert answer.status_code == status, case
        assert answer.json()["detail"], case
        if status == 401:
            assert answer.headers["www-authenticate"] == "Bearer", case
    # refused before the body is read: a caller without a credential learns nothing more
    assert api.request(method, path, content=b"{not json").status_code == 401
    assert api.request(method, path.replace("robot-00", "no such robot")).status_code == 401
    assert _recorded(store_settings) == before
    own = api.request(method, path, json=body, headers=_bearer(api.robots["robot-00"]))
    assert own.status_code in (200, 201) and own.json()["robot_id"] == "robot-00"


def test_a_retried_heartbeat_counts_once_and_counts_that_cannot_be_true_are_refused(
    api, store_settings
):
    robot = _bearer(api.robots["robot-00"])
    first = api.post("/robots/robot-00/heartbeats", json=BEAT, headers=robot)
    retry = api.post("/robots/robot-00/heartbeats", json=BEAT, headers=robot)
    assert first.status_code == retry.status_code == 201 and first.json() == retry.json()
    changed = api.post("/robots/robot-00/heartbeats", json={**BEAT, "failures": 2}, headers=robot)
    assert changed.status_code == 409 and "new heartbeat_id" in changed.json()["detail"]
    other_id = {**BEAT, "heartbeat_id": "3f1d2c4b-5a69-4e7d-8c0b-1a2b3c4d5e70"}
    for bad, field in (
        (
            {"successes": 0, "failures": 50, "interventions": 400, "active_seconds": 3.0},
            "active_seconds",
        ),
        ({"interventions": 400}, "interventions"),
        ({"active_seconds": 600_000.0}, "active_seconds"),
    ):
        refused = api.post("/robots/robot-00/heartbeats", json={**other_id, **bad}, headers=robot)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", field]
    wrong_version = api.post(
        "/robots/robot-00/heartbeats", json={**other_id, "policy_version": "3"}, headers=robot
    )
    assert wrong_version.status_code == 409 and "assigned version None" in wrong_version.text
    with session_scope(store_settings.db_url) as session:
        assert session.scalar(select(func.count()).select_from(Heartbeat)) == 1


def test_admins_enroll_rotate_and_revoke_and_the_old_credential_stops_working(api):
    admin = _bearer(api.tokens["admin"])
    for role in ("engineer", "fleet-manager"):
        refused = api.post(
            "/robots", json={"robot_id": "robot-09"}, headers=_bearer(api.tokens[role])
        )
        assert refused.status_code == 403 and "only an admin" in refused.json()["detail"]
    assert api.post("/robots", json={"robot_id": "robot-09"}).status_code == 401
    made = api.post("/robots", json={"robot_id": "robot-09", "tasks": ["push"]}, headers=admin)
    assert made.status_code == 201 and made.json()["credential"].startswith("fwr_")
    again = api.post("/robots", json={"robot_id": "robot-09"}, headers=admin)
    assert again.status_code == 409 and "rotate" in again.json()["detail"]
    old = _bearer(made.json()["credential"])
    assert api.get("/robots/robot-09/assignment", headers=old).status_code == 200

    rotated = api.post("/robots/robot-09/credential", headers=admin)
    assert rotated.status_code == 200
    assert api.get("/robots/robot-09/assignment", headers=old).status_code == 401
    new = _bearer(rotated.json()["credential"])
    assert api.get("/robots/robot-09/assignment", headers=new).status_code == 200

    assert api.delete("/robots/robot-09/credential", headers=admin).status_code == 204
    assert api.get("/robots/robot-09/assignment", headers=new).status_code == 401
    assert api.post("/robots/robot-99/credential", headers=admin).status_code == 404
    actions = [e["action"] for e in api.get("/audit", headers=admin).json()[:3]]
    assert actions == ["revoke-robot-credential", "rotate-robot-credential", "enroll-robot"]
