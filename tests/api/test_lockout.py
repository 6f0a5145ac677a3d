"""Repeated bad credentials lock a client out for a while: tokens, the login form, robots."""

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.api.lockout import LockedOut, Lockout
from services.api.main import create_app
from services.approval.users import add_user
from services.serving.credentials import issue_fleet_credentials
from services.store import session_scope
from services.store.models import Heartbeat


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def locked_api(settings):
    """The API with a lockout after 3 bad credentials in 60 s, for 300 s, on a fake clock."""
    with session_scope(settings.db_url) as session:
        token = add_user(session=session, name="fatima", role="fleet-manager")
    app = create_app()
    clock = Clock()
    app.state.lockout = Lockout(failures=3, window_s=60, lockout_s=300, clock=clock)
    client = TestClient(app)
    client.token, client.clock = token, clock
    return client


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_bad_tokens_lock_the_client_out_even_for_a_good_token_until_the_period_ends(locked_api):
    api = locked_api
    for _ in range(3):
        assert api.get("/users/me", headers=_as("fw_guess")).status_code == 401
    locked = api.get("/users/me", headers=_as(api.token))  # right token, wrong moment
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "300"
    assert "locked out" in locked.json()["detail"]

    api.clock.now += 299
    assert api.get("/users/me", headers=_as(api.token)).status_code == 429
    api.clock.now += 2
    assert api.get("/users/me", headers=_as(api.token)).json()["name"] == "fatima"
    assert api.get("/health").status_code == 200  # a lockout never touches open endpoints


def test_failures_spread_beyond_the_window_do_not_lock(locked_api):
    api = locked_api
    for _ in range(4):
        assert api.get("/users/me", headers=_as("fw_guess")).status_code == 401
        api.clock.now += 31  # never 3 failures within 60 s
    assert api.get("/users/me", headers=_as(api.token)).status_code == 200


def test_the_login_form_locks_out_too(locked_api):
    api = locked_api

    def sign_in(token: str):  # as a browser does: open the form, send it with its nonce
        nonce = re.search(r'name="csrf" value="([^"]+)"', api.get("/ui/login").text).group(1)
        return api.post("/ui/login", data={"token": token, "csrf": nonce}, follow_redirects=False)

    for _ in range(3):
        assert sign_in("fw_guess").status_code == 401
    page = sign_in(api.token)
    assert page.status_code == 429 and page.headers["retry-after"] == "300"
    assert "locked out" in page.text
    api.clock.now += 301
    assert sign_in(api.token).status_code == 303


def test_a_robot_is_locked_by_its_own_failures_from_any_address():
    clock = Clock()
    lockout = Lockout(failures=2, window_s=60, lockout_s=120, clock=clock)
    for address in ("ip:10.0.0.1", "ip:10.0.0.2"):  # one guesser, two addresses
        lockout.record_failure([address, "robot:robot-00"])
    with pytest.raises(LockedOut) as locked:
        lockout.check(["ip:10.0.0.3", "robot:robot-00"])
    assert locked.value.retry_after_s == 120
    lockout.check(["ip:10.0.0.3", "robot:robot-01"])  # another robot is not affected
    lockout.record_success(["ip:10.0.0.1", "robot:robot-00"])  # a success does not unlock
    with pytest.raises(LockedOut):
        lockout.check(["robot:robot-00"])
    clock.now += 120
    lockout.check(["robot:robot-00"])


def test_bad_robot_credentials_lock_the_robot_endpoints_and_record_nothing(settings, locked_api):
    api = locked_api
    with session_scope(settings.db_url, write=True) as session:
        keys = issue_fleet_credentials(
            session=session, robot_ids=["robot-00", "robot-01"], tasks=["pick-place"], actor="t"
        )
    beat = {
        "heartbeat_id": "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
        "policy_version": None,
        "successes": 1,
        "failures": 0,
        "interventions": 0,
        "active_seconds": 1.0,
    }
    url = "/robots/robot-00/heartbeats"
    assert api.post(url, json=beat).status_code == 401  # no credential: nothing guessed
    for guess in ("fwr_guess", "fwr_again", keys["robot-01"]):  # the last: another robot's
        assert api.post(url, json=beat, headers=_as(guess)).status_code in (401, 403)
    locked = api.post(url, json=beat, headers=_as(keys["robot-00"]))
    assert locked.status_code == 429 and locked.headers["retry-after"] == "300"
    with session_scope(settings.db_url) as session:
        assert session.scalar(select(func.count()).select_from(Heartbeat)) == 0
    api.clock.now += 301
    assert api.post(url, json=beat, headers=_as(keys["robot-00"])).status_code == 201
