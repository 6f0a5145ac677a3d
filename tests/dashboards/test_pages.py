"""The review pages over HTTP: sign-in, roles, CSRF, and what each page shows."""

from __future__ import annotations

import io
import re

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.api.main import create_app
from services.approval.users import issue_token
from services.episode_store.clips import write_clip
from services.store import session_scope
from services.store.models import Episode
from tests.conftest import _settings
from tests.dashboards.conftest import seed_fleet_store
from tests.dashboards.videos import add_review_videos, encode, frame


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
    assert 'id="no-videos"' in page  # none recorded for its failure: the page says so
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


@pytest.fixture
def filmed(site):
    add_review_videos(site.settings)
    _login(site, "engineer")
    return site


def _rows(page: str) -> list[str]:
    body = page.split('<table id="episodes">')[1].split("</table>")[0]
    return re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", body, re.S)


def test_the_episode_browser_filters_and_shows_quarantine_reasons(site):
    _login(site, "engineer")
    everything = _rows(site.get("/ui/episodes").text)
    # 4 deployments a night for 2 nights, and the truncated log (the same bytes both nights)
    assert len(everything) == 9
    robot = _rows(site.get("/ui/episodes", params={"robot": "robot-01"}).text)
    assert len(robot) == 2 and all("robot-01" in cells for _, cells in robot)
    failures = _rows(site.get("/ui/episodes", params={"outcome": "failure"}).text)
    assert len(failures) == 2 and all("robot-00" in cells for _, cells in failures)
    both = site.get("/ui/episodes", params={"robot": "robot-01", "outcome": "failure"}).text
    assert _rows(both) == [] and "No episode matches" in both
    # a quarantined upload, with its reason, and a page that says nothing of it is stored
    page = site.get("/ui/episodes", params={"status": "quarantined"}).text
    rows = _rows(page)
    assert len(rows) == 1 and rows[0][0] == "quarantined"
    reason = re.search(r'<td class="reason">([^<]+)</td>', rows[0][1]).group(1)
    assert "truncated" in reason or "MCAP" in reason
    link = re.search(r'href="(/ui/episodes/[^"]+)"', rows[0][1]).group(1)
    episode = site.get(link).text
    assert 'id="episode-reason"' in episode and "Nothing of this episode is in the store" in episode
    # an episode uploaded again in other bytes is a duplicate, linked to the one stored
    with session_scope(site.settings.db_url) as session:
        original, copy = session.scalars(
            select(Episode).where(Episode.robot_id == "robot-01").order_by(Episode.id)
        ).all()
        copy.status, copy.duplicate_of, copy.data_file = "duplicate", original.id, None
        copy_id, original_id = copy.id, original.id
    rows = _rows(site.get("/ui/episodes", params={"status": "duplicate"}).text)
    assert len(rows) == 1 and f'href="/ui/episodes/{original_id}"' in rows[0][1]
    page = site.get(f"/ui/episodes/{copy_id}").text
    assert f'href="/ui/episodes/{original_id}" id="duplicate-of"' in page


def test_an_episode_page_plays_its_camera_with_the_takeover_on_the_timeline(filmed):
    page = filmed.get("/ui/episodes", params={"robot": "robot-00"}).text
    link = re.search(r'href="(/ui/episodes/[^"]+)"', page).group(1)
    episode = filmed.get(link).text
    assert 'data-steps="60"' in episode and 'data-plot="plot-steps"' in episode
    # robot-00 is taken over on steps 20..31 of 60 (conftest.TAKEOVER), on both nights
    assert 'title="operator, steps 20–31" style="left: 33.33' in episode
    video = re.search(r'<video src="([^"]+\.mp4)"', episode).group(1)
    answer = filmed.get(video)
    assert answer.status_code == 200 and answer.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(answer.content)) as clip:
        frames = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
    # the episode's own frames, each the bright bar of its step, and none of its neighbours'
    assert len(frames) == 60
    assert [int(np.argmax(f[32, :, 0])) for f in frames] == list(range(60))
    assert filmed.get(video).content == answer.content  # the cached clip
    # the wrist camera's episodes start mid-GOP: its clip still shows exactly this episode
    wrist = filmed.get(video.replace("/front.mp4", "/wrist.mp4"))
    with av.open(io.BytesIO(wrist.content)) as clip:
        frames = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
    assert [int(np.argmax(f[32, :, 0])) for f in frames] == list(range(60))
    # a camera or an episode that is not there, and a video without a session
    assert filmed.get(f"{link}/cameras/top.mp4").status_code == 404
    assert filmed.get("/ui/episodes/nope/cameras/front.mp4").status_code == 404
    assert filmed.get("/ui/episodes/nope").status_code == 404
    filmed.cookies.clear()
    assert filmed.get(f"{link}/cameras/front.mp4", follow_redirects=False).status_code == 303


def test_a_clip_cut_mid_gop_shows_exactly_the_episodes_frames(tmp_path):
    for codec in ("libx264", "libsvtav1"):
        # episodes of 7, 9 and 5 frames with a keyframe every 2: the second starts mid-GOP
        source = tmp_path / f"{codec}.mp4"
        spans = encode(source, [7, 9, 5], 10, codec, keyframe_starts=False)
        clip = tmp_path / f"{codec}-clip.mp4"
        assert write_clip(source, *spans[1], clip) == 9
        with av.open(str(clip)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert [int(np.argmax(f[32, :, 0])) for f in frames] == list(range(9)), codec
        shade = int(frame(0, 1)[0, 40, 1])  # episode 1's background, 50 from its neighbours'
        assert all(abs(int(f[0, 40, 1]) - shade) < 15 for f in frames), codec


def test_the_candidate_page_shows_a_failure_beside_the_champion_on_the_same_seed(filmed):
    page = filmed.get("/ui/candidates/3").text
    pair = page.split('id="pair-pick-place-35"')[1].split("</button>")[0]
    for side in ("candidate", "champion"):
        src = f"/ui/candidates/c3/episodes/pick-place/35/{side}.mp4"
        assert src in pair
        answer = filmed.get(src)
        assert answer.status_code == 200
        with av.open(io.BytesIO(answer.content)) as video:
            assert sum(1 for _ in video.decode(video=0)) == 200
    assert "Play together" in pair and 'id="no-videos"' not in page
    # no video was recorded for a seed both passed, nor for a side that is not one
    assert filmed.get("/ui/candidates/c3/episodes/pick-place/0/candidate.mp4").status_code == 404
    assert filmed.get("/ui/candidates/c3/episodes/pick-place/35/parent.mp4").status_code == 404
    # the fleet episodes it learned from, with their cameras and the takeover on the timeline
    fleet = page.split("Fleet episodes it learned from")[1].split("Decisions and comments")[0]
    assert fleet.count('<figure class="player"') == 3 * 2  # front and wrist
    assert fleet.count('class="takeover"') >= 2


def test_the_candidate_page_and_the_api_show_its_shadow_run(site):
    """A shadow run of v5 beside champion v2 on night 1's four episodes: the candidate acts as
    the executed actions plus 0.05 on every dimension, the champion as the executed ones."""
    from services.episode_store.parquet import EpisodeStore
    from services.features import ACTION, EPISODE_ID
    from services.shadow.log import ShadowLogWriter, ShadowRecord
    from services.shadow.runs import start_shadow

    settings = site.settings
    with session_scope(settings.db_url, write=True) as session:
        episodes = session.scalars(
            select(Episode).where(Episode.policy_version == "2", Episode.status == "ok")
        ).all()
        uuids = {e.id: (e.robot_id, e.source_episode_uuid) for e in episodes}
        start_shadow(session=session, candidate_id="c5", actor="fatima", reason="test")
    frames = EpisodeStore(settings.episode_store).read_frames(list(uuids))
    writer = ShadowLogWriter(settings.shadow_log)
    for episode_id, steps in frames.groupby(EPISODE_ID):
        robot, uuid = uuids[episode_id]
        for step, action in enumerate(steps[ACTION]):
            executed = np.asarray(action, np.float32)
            writer.append(
                ShadowRecord(robot, uuid, step, "pick-place", "2", executed, "5", executed + 0.05)
            )
    writer.flush()

    token = site.tokens["engineer"]
    report = site.get("/candidates/5/shadow", headers={"Authorization": f"Bearer {token}"})
    assert report.status_code == 200, report.text
    task = report.json()["tasks"]["pick-place"]
    assert (task["episodes"], task["operator_steps"], task["autonomous_successes"]) == (4, 24, 2)
    assert task["candidate_operator_distance"]["value"] == pytest.approx(0.05, abs=1e-6)
    assert task["champion_operator_distance"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert task["agreement_on_successes"]["value"] == 1.0
    missing = site.get("/candidates/3/shadow", headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 404 and "never run as a shadow" in missing.json()["detail"]

    _login(site, "engineer")
    page = site.get("/ui/candidates/5").text
    assert "Shadow run on the fleet" in page and "evidence so far" in page
    assert "+0.050" in page and "of 2" in page  # the difference; the takeovers it saw
