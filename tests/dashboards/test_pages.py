"""The review pages over HTTP: sign-in, roles, CSRF, and what each page shows."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from services.api.main import create_app
from services.approval.users import issue_token
from services.store import session_scope
from tests.conftest import _settings
from tests.dashboards.conftest import seed_fleet_store


@pytest.fixture
def site(settings, tmp_path):
    client = TestClient(create_app())
    client.tokens = seed_fleet_store(settings, tmp_path)
    client.settings = settings
    return client


def _nonce(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _sign_in(client, token: str, next: str = "/ui/audit"):
    """Post the login form as a browser does: open it, then send it with its nonce."""
    nonce = _nonce(client.get("/ui/login").text)
    return client.post(
        "/ui/login",
        data={"token": token, "next": next, "csrf": nonce},
        follow_redirects=False,
    )


def _login(client, role: str) -> str:
    answer = _sign_in(client, client.tokens[role])
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/audit"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    return _nonce(client.get("/ui/candidates/3").text)


def test_pages_need_a_session_and_a_bad_token_is_refused(site):
    answer = site.get("/ui/candidates/3", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/login?next=/ui/candidates/3"
    wrong = _sign_in(site, "fw_nope")
    assert wrong.status_code == 401 and "invalid" in wrong.text
    forged = site.get("/ui", cookies={"flywheel_session": "e30.forged.sig"}, follow_redirects=False)
    assert forged.status_code == 303


def test_login_never_redirects_off_site(site):
    answer = _sign_in(site, site.tokens["engineer"], next="//evil.example/x")
    assert answer.headers["location"] == "/ui"


def test_a_login_posted_without_the_forms_nonce_signs_nobody_in(site):
    """Login CSRF: another site must not sign a reader in as the attacker."""
    for nonce in (None, "forged"):
        data = {"token": site.tokens["engineer"]} | ({"csrf": nonce} if nonce else {})
        answer = site.post("/ui/login", data=data, follow_redirects=False)
        assert answer.status_code == 403 and "sign in again" in answer.text
        assert "flywheel_session" not in site.cookies
    assert site.get("/ui", follow_redirects=False).status_code == 303


def test_every_form_post_without_the_sessions_nonce_is_refused_and_changes_nothing(site):
    csrf = _login(site, "fleet-manager")
    posts = {
        "/ui/candidates/c3/approve": {"reason": "forged"},
        "/ui/candidates/c3/reject": {"reason": "forged"},
        "/ui/candidates/c3/comment": {"reason": "forged"},
        "/ui/rollouts/halt": {"reason": "forged"},
        "/ui/rollouts/rollback": {"reason": "forged"},
        "/ui/logout": {},
    }
    audit_before = site.get("/ui/audit").text
    for path, data in posts.items():
        for nonce in (None, "wrong", csrf[:-1]):
            form = data | ({"csrf": nonce} if nonce else {})
            answer = site.post(path, data=form, follow_redirects=False)
            assert answer.status_code == 303, (path, nonce)
            assert answer.headers["location"].startswith("/ui/login"), (path, nonce)
    assert site.get("/ui/audit").text == audit_before  # nothing approved, halted or said
    assert "/ui/candidates/c3/approve" in site.get("/ui/approvals").text  # still waiting
    assert site.get("/ui", follow_redirects=False).status_code == 200  # still signed in


@pytest.mark.postgres
def test_cookies_are_secure_in_production(postgres_url, tmp_path, monkeypatch):
    """TLS usually ends at a proxy, so this process sees plain HTTP: production marks its
    cookies Secure all the same (and a browser then sends them over HTTPS alone)."""
    site = TestClient(create_app())
    tokens = seed_fleet_store(_settings(tmp_path, monkeypatch, postgres_url), tmp_path)
    monkeypatch.setenv("FLYWHEEL_MODE", "production")
    monkeypatch.setenv("FLYWHEEL_SECRET_KEY", "a-real-secret-for-this-test")
    form = site.get("/ui/login")
    login_cookie = form.headers["set-cookie"]
    assert "; secure" in login_cookie.lower() and "httponly" in login_cookie.lower()
    answer = site.post(
        "/ui/login",
        data={"token": tokens["engineer"], "csrf": _nonce(form.text)},
        headers={"Cookie": login_cookie.split(";")[0]},  # the jar keeps Secure ones for HTTPS
        follow_redirects=False,
    )
    session_cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("flywheel_session=")
    ).lower()
    assert answer.status_code == 303
    assert all(f in session_cookie for f in ("; secure", "; httponly", "samesite=lax"))


def test_an_engineer_sees_everything_but_cannot_approve(site):
    csrf = _login(site, "engineer")
    for path in ("/ui", "/ui/candidates", "/ui/approvals", "/ui/rollouts", "/ui/audit"):
        assert site.get(path).status_code == 200, path
    detail = site.get("/ui/candidates/3").text
    assert "/approve" not in detail and "Only a fleet manager may approve" in detail
    refused = site.post("/ui/candidates/c3/approve", data={"csrf": csrf, "reason": "lgtm"})
    assert refused.status_code == 403 and "only a fleet manager" in refused.text
    halt = site.post("/ui/rollouts/halt", data={"csrf": csrf, "reason": "worried"})
    assert halt.status_code == 403
    comment = site.post("/ui/candidates/c3/comment", data={"csrf": csrf, "reason": "see seed 35"})
    assert comment.status_code == 200 and "see seed 35" in comment.text


def test_a_fleet_manager_approves_with_a_reason_once(site):
    csrf = _login(site, "fleet-manager")
    assert "/ui/candidates/c3/approve" in site.get("/ui/approvals").text
    no_csrf = site.post("/ui/candidates/c3/approve", data={"reason": "x"}, follow_redirects=False)
    assert no_csrf.status_code == 303 and no_csrf.headers["location"].startswith("/ui/login")
    approved = site.post("/ui/candidates/c3/approve", data={"csrf": csrf, "reason": "canary ok"})
    assert approved.status_code == 200 and "canary ok" in approved.text
    again = site.post("/ui/candidates/c3/reject", data={"csrf": csrf, "reason": "changed mind"})
    assert again.status_code == 409 and "already approved" in again.text
    audit = site.get("/ui/audit?subject=c3").text
    assert "approve" in audit and "u-fleet-manager" in audit


def test_a_new_token_ends_old_sessions(site):
    _login(site, "engineer")
    with session_scope(site.settings.db_url) as session:
        issue_token(session=session, name="u-engineer")
    assert site.get("/ui", follow_redirects=False).status_code == 303


def test_candidate_page_shows_the_evidence(site):
    _login(site, "engineer")
    page = site.get("/ui/candidates/3").text
    assert "30/40" in page and "12/40" in page  # per-task successes, candidate and champion
    assert "run-abc123" in page and "flow-2" in page
    assert page.count('class="plot"') == 2 + 1 + 3  # tasks, curve; seed 35; 3 fleet takeovers
    assert '"operator"' in page  # the operator's spans are shaded and labelled
    assert site.get("/ui/candidates/nope").status_code == 404


def test_links_to_mlflow_and_prefect_when_their_uis_are_set(site, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_MLFLOW_UI_URL", "http://mlflow:5000/")
    monkeypatch.setenv("FLYWHEEL_PREFECT_UI_URL", "http://prefect:4200")
    _login(site, "engineer")
    page = site.get("/ui/candidates/3").text
    assert 'href="http://mlflow:5000/#/runs/run-abc123"' in page
    assert 'href="http://prefect:4200/runs/flow-run/flow-2"' in page


def test_plotly_is_served_locally_and_pages_stay_out_of_the_api_schema(site):
    answer = site.get("/vendor/plotly.min.js")
    assert answer.status_code == 200 and b"plotly" in answer.content[:2000].lower()
    assert not [p for p in site.get("/openapi.json").json()["paths"] if p.startswith("/ui")]


def test_the_overview_shows_a_night_without_a_fleet_shift(site):
    """The first night has only lab demonstrations: no fleet figures to show."""
    from services.store.models import NightlyRun

    with session_scope(site.settings.db_url) as session:
        session.add(NightlyRun(state="completed", summary={"outcome": "lab demos only"}))
    _login(site, "engineer")
    overview = site.get("/ui")
    assert overview.status_code == 200 and "lab demos" in overview.text


def test_candidate_page_says_when_its_dataset_is_no_longer_reproducible(site):
    from services.curation.deletion import delete_episodes

    _login(site, "engineer")
    assert "no longer reproducible" not in site.get("/ui/candidates/3").text
    report = delete_episodes(
        site.settings, robots=["robot-00"], reason="owner asked", actor="fatima"
    )
    page = site.get("/ui/candidates/3").text
    assert report.datasets and "episodes it used were deleted by fatima: owner asked" in page
