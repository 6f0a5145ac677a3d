"""Every endpoint of the review API against every role, on SQLite and PostgreSQL."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.api.main import create_app
from services.store import session_scope
from services.store.models import AuditEvent, Candidate, Heartbeat, Robot, Rollout
from tests.api.conftest import ROLES, enroll_robots, seed_review_store


@pytest.fixture
def api(store_settings):
    client = TestClient(create_app())
    client.tokens = seed_review_store(store_settings)
    return client


def _auth(client, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.tokens[role]}"}


READS = ["/candidates", "/candidates/3", "/candidates/c3", "/audit", "/users/me"]


@pytest.mark.parametrize("path", READS)
def test_reads_need_a_valid_token_and_every_role_may_read(api, path):
    missing = api.get(path)
    assert missing.status_code == 401 and "bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = api.get(path, headers={"Authorization": "Bearer fw_not-a-token"})
    assert wrong.status_code == 401 and "invalid" in wrong.json()["detail"]
    for role in ROLES:
        assert api.get(path, headers=_auth(api, role)).status_code == 200, role


def test_health_needs_no_token(api):
    assert api.get("/health").json() == {"status": "ok"}


def test_a_query_parameter_without_a_name_is_refused(api):
    answer = api.get("/audit?limit=1&=null", headers=_auth(api, "engineer"))
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["msg"] == "a query parameter has no name"
    assert api.get("/audit?limit=1", headers=_auth(api, "engineer")).status_code == 200


def test_an_unknown_query_parameter_is_refused_not_ignored(api):
    answer = api.get("/audit?limt=5", headers=_auth(api, "engineer"))  # a typo of limit
    assert answer.status_code == 422
    [error] = answer.json()["detail"]
    assert error["loc"] == ["query", "limt"] and "takes limit, subject_id" in error["msg"]
    # a robot endpoint checks the credential first: without one, only 401
    assert api.get("/robots/robot-00/assignment?x=1").status_code == 401


def test_candidate_list_and_detail_show_every_number_behind_the_verdict(api):
    listed = {
        c["model_version"]: c for c in api.get("/candidates", headers=_auth(api, "engineer")).json()
    }
    assert listed["3"]["gate"] == "pass" and listed["4"]["gate"] == "fail"
    assert listed["3"]["status"] == "passed" and listed["3"]["approval"] is None

    detail = api.get("/candidates/3", headers=_auth(api, "engineer")).json()
    assert detail["id"] == "c3" and detail["champion_version"] == "2"
    [task] = detail["tasks"]
    assert task["candidate"]["successes"] == 30 and task["champion"]["successes"] == 12
    low, high = task["candidate"]["ci"]
    assert low < 30 / 40 < high
    assert task["difference"] == pytest.approx(18 / 40)
    assert task["candidate_only"] == 18 and task["champion_only"] == 0
    assert task["difference_lower_bound"] > 0
    assert detail["gate"]["verdict"] == "pass" and detail["gate"]["numbers"]["p_value"] < 0.05
    assert detail["lineage"]["dataset"]["id"] == "d1"
    assert detail["offline"]["pick-place"]["candidate_action_mse"] == 0.02
    failing = detail["failing_episodes"]
    assert [e["seed"] for e in failing] == list(range(30, 40))
    assert all(e["champion_succeeded"] is False for e in failing)


def test_a_reviewer_opens_a_failure_next_to_the_champion_on_the_same_seed(api):
    engineer = _auth(api, "engineer")
    episode = api.get("/candidates/3/episodes/pick-place/35", headers=engineer).json()
    assert episode["candidate"]["success"] is False and episode["candidate"]["model_version"] == "3"
    assert episode["champion"]["model_version"] == "2" and episode["champion"]["success"] is False
    trajectory = episode["candidate"]["trajectory"]
    assert trajectory["steps"] == 6 and trajectory["states"][2] == [2.0, -2.0]
    assert trajectory["actions"][5] == [pytest.approx(0.5)]
    unkept = api.get("/candidates/3/episodes/pick-place/31", headers=engineer).json()
    assert unkept["candidate"]["trajectory"] is None and unkept["champion"]["success"] is False
    for path in ("/candidates/3/episodes/pick-place/400", "/candidates/3/episodes/push/1"):
        missing = api.get(path, headers=engineer)
        assert missing.status_code == 404 and "no evaluation" in missing.json()["detail"]


def test_only_a_fleet_manager_approves_or_rejects(api):
    for role in ("engineer", "admin"):
        refused = api.post("/candidates/3/approve", json={"reason": "ok"}, headers=_auth(api, role))
        assert refused.status_code == 403 and "only a fleet manager" in refused.json()["detail"]
        refused = api.post("/candidates/3/reject", json={"reason": "no"}, headers=_auth(api, role))
        assert refused.status_code == 403
    fm = _auth(api, "fleet-manager")
    approved = api.post("/candidates/3/approve", json={"reason": "canary looks fine"}, headers=fm)
    assert approved.status_code == 200
    assert (
        approved.json()["verdict"] == "approved" and approved.json()["actor"] == "u-fleet-manager"
    )
    again = api.post("/candidates/3/reject", json={"reason": "changed my mind"}, headers=fm)
    assert again.status_code == 409 and "already approved" in again.json()["detail"]
    failed = api.post("/candidates/4/approve", json={"reason": "please"}, headers=fm)
    assert failed.status_code == 409 and "failed" in failed.json()["detail"]
    assert api.post("/candidates/4/reject", json={"reason": "worse"}, headers=fm).status_code == 409
    assert api.post("/candidates/99/approve", json={"reason": "x"}, headers=fm).status_code == 404


def test_decisions_are_audited_with_state_before_and_after(api, store_settings):
    fm = _auth(api, "fleet-manager")
    api.post("/candidates/3/reject", json={"reason": "push regressed on site B"}, headers=fm)
    rows = api.get("/audit", params={"subject_id": "c3"}, headers=_auth(api, "engineer")).json()
    assert [r["action"] for r in rows] == ["reject", "gate"]
    reject = rows[0]
    assert reject["actor"] == "u-fleet-manager" and reject["reason"] == "push regressed on site B"
    assert reject["before"] == {"status": "passed"} and reject["after"] == {"status": "rejected"}
    with session_scope(store_settings.db_url) as session:
        assert session.get(Candidate, "c3").status == "rejected"


def test_every_role_may_comment(api):
    for role in ROLES:
        made = api.post(
            "/candidates/3/comments", json={"text": f"{role}: seen"}, headers=_auth(api, role)
        )
        assert made.status_code == 201 and made.json()["kind"] == "comment"
    decisions = api.get("/candidates/3", headers=_auth(api, "engineer")).json()["decisions"]
    assert [d["actor"] for d in decisions] == [f"u-{r}" for r in ROLES]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/candidates/3/approve", {}),
        ("/candidates/3/approve", {"reason": ""}),
        ("/candidates/3/approve", {"reason": "   "}),
        ("/candidates/3/approve", {"reason": "bad\x00byte"}),
        ("/candidates/3/approve", {"reason": "x" * 2001}),
        ("/candidates/3/comments", {"text": 42}),
        ("/candidates/bad%00ref/approve", {"reason": "ok"}),
        ("/users", {"name": "new", "role": "superuser"}),
        ("/users", {"name": "has space", "role": "engineer"}),
    ],
)
def test_invalid_input_gets_a_4xx_with_a_message_and_changes_nothing(
    api, store_settings, path, body
):
    who = "admin" if path == "/users" else "fleet-manager"
    answer = api.post(path, json=body, headers=_auth(api, who))
    assert 400 <= answer.status_code < 500 and answer.json()["detail"]
    with session_scope(store_settings.db_url) as session:
        assert session.get(Candidate, "c3").status == "passed"
        assert not session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.in_(("approve", "add-user")))
            .where(AuditEvent.subject_id.in_(("c3", "new", "has space")))
        ).all()


def test_only_an_admin_manages_users_and_a_new_token_replaces_the_old(api):
    admin = _auth(api, "admin")
    for role in ("engineer", "fleet-manager"):
        assert api.get("/users", headers=_auth(api, role)).status_code == 403
        denied = api.post("/users", json={"name": "x", "role": "admin"}, headers=_auth(api, role))
        assert denied.status_code == 403 and "only an admin" in denied.json()["detail"]
        assert api.post("/users/u-engineer/token", headers=_auth(api, role)).status_code == 403
    made = api.post("/users", json={"name": "nadia", "role": "fleet-manager"}, headers=admin)
    assert made.status_code == 201
    token = made.json()["token"]
    me = api.get("/users/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me == {"name": "nadia", "role": "fleet-manager"}
    assert (
        api.post("/users", json={"name": "nadia", "role": "engineer"}, headers=admin).status_code
        == 409
    )
    assert {u["name"] for u in api.get("/users", headers=admin).json()} >= {"nadia", "u-admin"}

    rotated = api.post("/users/nadia/token", headers=admin)
    assert rotated.status_code == 200 and rotated.json()["token"] != token
    assert api.get("/users/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    fresh = {"Authorization": f"Bearer {rotated.json()['token']}"}
    assert api.get("/users/me", headers=fresh).json()["name"] == "nadia"
    assert api.post("/users/ghost/token", headers=admin).status_code == 404


def test_a_robot_reports_heartbeats_and_learns_its_assignment(api, store_settings):
    robot = {"Authorization": f"Bearer {enroll_robots(store_settings, ['robot-00'])['robot-00']}"}
    answer = api.get("/robots/robot-00/assignment", headers=robot).json()
    assert answer == {
        "robot_id": "robot-00",
        "model_version": None,
        "model_uri": None,
        "checksum": None,
    }
    beat = {
        "heartbeat_id": "0b7c3f0e-8d7a-4f8e-9c1e-2f3a4b5c6d7e",
        "policy_version": None,
        "successes": 2,
        "failures": 1,
        "interventions": 4,
        "active_seconds": 30,
    }
    made = api.post("/robots/robot-00/heartbeats", json=beat, headers=robot)
    assert made.status_code == 201 and made.json()["model_version"] is None
    with session_scope(store_settings.db_url) as session:
        [stored] = session.scalars(select(Heartbeat)).all()
        assert (stored.episodes, stored.failures, stored.interventions) == (3, 1, 4)
        assert session.get(Robot, "robot-00").last_seen is not None
    for bad in (
        {**beat, "failures": -1},
        {**beat, "successes": 2.5},
        {**beat, "active_seconds": "x"},
        {**beat, "heartbeat_id": "not-a-uuid"},
        {k: v for k, v in beat.items() if k != "heartbeat_id"},
    ):
        refused = api.post("/robots/robot-00/heartbeats", json=bad, headers=robot)
        assert refused.status_code == 422 and refused.json()["detail"][0]["loc"][0] == "body"
    broken = api.post("/robots/robot-00/heartbeats", content=b"{not json", headers=robot)
    assert broken.status_code == 422


def test_the_openapi_schema_declares_bearer_auth_and_every_route(api):
    schema = api.get("/openapi.json").json()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    assert {
        "/candidates",
        "/candidates/{ref}",
        "/candidates/{ref}/approve",
        "/candidates/{ref}/reject",
        "/candidates/{ref}/comments",
        "/candidates/{ref}/episodes/{task}/{seed}",
        "/audit",
        "/rollouts",
        "/rollouts/halt",
        "/rollouts/rollback",
        "/users",
        "/users/me",
        "/users/{name}/token",
        "/robots",
        "/robots/{robot_id}/credential",
        "/robots/{robot_id}/assignment",
        "/robots/{robot_id}/heartbeats",
    } <= set(schema["paths"])
    assert "RobotCredential" in schema["components"]["securitySchemes"]


def test_rollouts_are_shown_to_everyone_and_only_a_fleet_manager_halts(api, store_settings):
    for role in ROLES:
        overview = api.get("/rollouts", headers=_auth(api, role)).json()
        assert overview["rollouts"] == [] and overview["robots"][0]["robot_id"] == "robot-00"
    fm = _auth(api, "fleet-manager")
    idle = api.post("/rollouts/halt", json={"reason": "just in case"}, headers=fm)
    assert idle.status_code == 409 and "nothing to halt" in idle.json()["detail"]
    with session_scope(store_settings.db_url) as session:
        session.add(
            Rollout(
                candidate_id="c3",
                from_version="2",
                to_version="3",
                state="in_progress",
                stages=[{"name": "canary", "share": 0.25, "robots": ["robot-00"], "outcome": None}],
            )
        )
    for role in ("engineer", "admin"):
        refused = api.post("/rollouts/halt", json={"reason": "no"}, headers=_auth(api, role))
        assert refused.status_code == 403 and "only a fleet manager" in refused.json()["detail"]
    halted = api.post("/rollouts/halt", json={"reason": "grasps look off"}, headers=fm)
    assert halted.status_code == 200
    assert halted.json()["state"] == "halted" and halted.json()["reason"] == "grasps look off"
    audit = api.get("/audit", headers=fm).json()[0]
    assert audit["action"] == "halt-rollout" and audit["actor"] == "u-fleet-manager"


def test_only_a_fleet_manager_starts_or_rolls_back_and_conflicts_are_explained(api):
    """The CLI's `rollout start` and `rollout rollback` in production; nothing changes on a
    refusal (a start that succeeds is covered with a registered model in tests/rollout)."""
    for role in ("engineer", "admin"):
        start = api.post("/rollouts", json={"candidate": "3"}, headers=_auth(api, role))
        assert start.status_code == 403 and "only a fleet manager" in start.json()["detail"]
        back = api.post("/rollouts/rollback", json={"reason": "no"}, headers=_auth(api, role))
        assert back.status_code == 403 and "only a fleet manager" in back.json()["detail"]
    fm = _auth(api, "fleet-manager")
    unknown = api.post("/rollouts", json={"candidate": "99"}, headers=fm)
    assert unknown.status_code == 404 and "no candidate" in unknown.json()["detail"]
    unapproved = api.post("/rollouts", json={"candidate": "3"}, headers=fm)
    assert unapproved.status_code == 409 and "only an approved" in unapproved.json()["detail"]
    assert api.post("/candidates/3/approve", json={"reason": "ok"}, headers=fm).status_code == 200
    stale = api.post("/rollouts", json={"candidate": "c3"}, headers=fm)  # no champion 2 yet
    assert stale.status_code == 409 and "evaluated against 2" in stale.json()["detail"]
    back = api.post("/rollouts/rollback", json={"reason": "worried"}, headers=fm)
    assert back.status_code == 409 and "nothing to roll back" in back.json()["detail"]
    assert api.get("/rollouts", headers=fm).json()["rollouts"] == []
