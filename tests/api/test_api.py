from fastapi.testclient import TestClient

from services.api.main import create_app
from services.rollout.assignments import assign, register_robots
from services.store import session_scope
from services.store.models import Decision
from tests.conftest import add_candidate


def test_health_candidates_and_a_robots_assignment(store_settings):
    add_candidate(store_settings.db_url, "c1", version="3", status="failed")
    with session_scope(store_settings.db_url) as session:
        session.add(
            Decision(
                candidate_id="c1", kind="gate", verdict="fail", actor="gate", reason="not better"
            )
        )
        register_robots(session=session, robot_ids=["robot-00"], tasks=["toy-reach"])
        session.flush()
        assign(session=session, robot_ids=["robot-00"], version="2", actor="t", reason="test")
    client = TestClient(create_app())
    assert client.get("/health").json() == {"status": "ok"}
    [candidate] = client.get("/candidates").json()
    assert candidate["gate"] == "fail" and candidate["model_version"] == "3"
    assert client.get("/robots/robot-00/assignment").json() == {
        "robot_id": "robot-00",
        "model_version": "2",
    }
    missing = client.get("/robots/robot-99/assignment")
    assert missing.status_code == 404 and "unknown robot" in missing.json()["detail"]
