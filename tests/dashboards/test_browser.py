"""The review pages in a real headless Chromium (Debian's), driven by Playwright.

Screenshots go to tests/dashboards/screenshots/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

from services.api.main import create_app
from services.config import Settings, configure_runtime
from services.store import migrate
from tests.dashboards.conftest import seed_fleet_store
from tests.dashboards.videos import add_review_videos

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).parent / "screenshots"
# The flags the machine's own probe ran Debian's Chromium with (no sandbox as root, no GPU,
# nothing fetched from the network).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    # Each takes seconds; one run of the whole suite saw the approval test hang with Chromium
    # busy, not reproduced alone or beside a training test: stop it with its stacks instead.
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (/usr/bin/chromium): `make browser` installs it",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free port of 127.0.0.1, on a seeded store, for the whole module."""
    tmp = tmp_path_factory.mktemp("pages")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLYWHEEL_HOME", str(tmp / "home"))
        for key in ("FLYWHEEL_DATABASE_URL", "FLYWHEEL_MLFLOW_TRACKING_URI", "FLYWHEEL_MODE"):
            env.delenv(key, raising=False)
        settings = Settings()
        configure_runtime(settings)
        migrate(settings.db_url)
        tokens = seed_fleet_store(settings, tmp)
        add_review_videos(settings)  # H.264 fleet cameras, AV1 evaluation videos
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning")
        app_server = uvicorn.Server(config)
        thread = threading.Thread(target=app_server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not app_server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", tokens
        app_server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()
    print(f"\nscreenshots in {SHOTS}")


def _sign_in(browser, server, role):
    url, tokens = server
    browser.clear_cookies()
    page = browser.new_page()
    page.goto(f"{url}/ui/candidates/3")
    assert "/ui/login" in page.url  # no session yet: the login form, then back here
    page.fill("input[name=token]", tokens[role])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/ui/candidates/3")
    assert page.inner_text("#viewer").startswith(f"u-{role}")
    return page


def _rendered(page, plot_id: str) -> None:
    """Plotly drew the figure: an SVG with the figure's traces inside the plot's div."""
    page.wait_for_selector(f"#plot-{plot_id} svg.main-svg g.trace", timeout=15_000)


def test_an_engineer_reviews_a_candidate_and_cannot_approve(browser, server):
    page = _sign_in(browser, server, "engineer")
    for plot in ("tasks", "curve", "eval-pick-place-35"):
        _rendered(page, plot)
    fleet_plots = page.locator(".plot[id^=plot-fleet-]")
    assert fleet_plots.count() == 3
    _rendered(page, fleet_plots.first.get_attribute("id").removeprefix("plot-"))
    # the operator's takeover is a shaded rectangle behind the lines
    assert page.locator(".plot[id^=plot-fleet-] .layer-below .shapelayer path").count() >= 1
    page.screenshot(path=SHOTS / "candidate-engineer.png", full_page=True)

    assert page.locator("button", has_text="Approve").count() == 0
    assert "Only a fleet manager may approve" in page.inner_text("main")
    # the server refuses even a hand-made post with a valid session and CSRF nonce
    csrf = page.locator("input[name=csrf]").first.input_value()
    answer = page.request.post(
        f"{server[0]}/ui/candidates/c3/approve", form={"csrf": csrf, "reason": "I insist"}
    )
    assert answer.status == 403
    page.close()


def test_a_fleet_manager_approves_and_the_audit_log_shows_it(browser, server):
    page = _sign_in(browser, server, "fleet-manager")
    _rendered(page, "tasks")
    page.fill("form.approve input[name=reason]", "beats v2 by 18 points; canary looks good")
    page.click("form.approve button")
    page.wait_for_selector("#decisions >> text=beats v2 by 18 points")
    assert page.locator("button", has_text="Approve").count() == 0  # decided: no more forms
    page.screenshot(path=SHOTS / "candidate-approved.png", full_page=True)

    page.click("nav >> text=Audit log")
    row = page.locator("#audit tbody tr").first
    assert "u-fleet-manager" in row.inner_text() and "approve" in row.inner_text()
    page.screenshot(path=SHOTS / "audit.png", full_page=True)
    page.close()


def test_overview_and_rollouts_draw_their_plots(browser, server):
    page = _sign_in(browser, server, "fleet-manager")
    page.click("nav >> text=Overview")
    for plot in ("fleet-success", "interventions", "evaluations", "champions"):
        _rendered(page, plot)
    assert page.inner_text("#champion") == "v2"
    page.screenshot(path=SHOTS / "overview.png", full_page=True)

    page.click("nav >> text=Rollouts")
    _rendered(page, "rollout-1")
    assert page.locator("button", has_text="Halt").count() == 1
    page.screenshot(path=SHOTS / "rollouts.png", full_page=True)
    page.close()


def _playing(page, video: str, seconds: float) -> None:
    """Start ``video`` (a selector) and wait until its currentTime passes ``seconds``."""
    page.wait_for_function(f"document.querySelector({video!r}).readyState >= 2", timeout=15_000)
    page.eval_on_selector(video, "v => v.play()")
    page.wait_for_function(
        f"document.querySelector({video!r}).currentTime > {seconds}", timeout=15_000
    )


# Seek a video to a time and find the bright bar in the frame shown (tests/dashboards/videos.py
# draws one at column = step): the column of row 32 with the most red.
_BAR_AT = """async (video, seconds) => {
  await new Promise((done) => { video.addEventListener("seeked", done, { once: true });
                                video.currentTime = seconds; });
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0);
  const row = context.getImageData(0, 32, canvas.width, 1).data;
  let best = 0;
  for (let x = 1; x < canvas.width; x++) if (row[4 * x] > row[4 * best]) best = x;
  return best;
}"""


def test_an_episode_video_plays_and_the_cursor_follows_it_over_the_takeover(browser, server):
    page = _sign_in(browser, server, "engineer")
    page.click("nav >> text=Episodes")
    page.select_option("select[name=robot]", "robot-00")
    page.click("#episode-filters button")
    page.click("#episodes tbody tr a >> nth=0")
    player = page.locator("figure.player").first
    assert player.locator(".takeover").count() == 1  # robot-00's takeover, steps 20-31
    _rendered(page, "steps")
    cursor = player.locator(".cursor")
    start = cursor.evaluate("c => c.getBoundingClientRect().left")
    # 60 steps at 10 frames/s: 2.5 s in is step 25, inside the takeover
    _playing(page, "figure.player video", 2.5)
    page.eval_on_selector("figure.player video", "v => v.pause()")
    step = int(player.locator("output.step").inner_text())
    assert step >= 25
    assert cursor.evaluate("c => c.getBoundingClientRect().left") > start
    takeover = player.locator(".takeover").evaluate("t => t.getBoundingClientRect().left")
    assert cursor.evaluate("c => c.getBoundingClientRect().left") > takeover
    assert player.locator("video").evaluate("v => v.videoWidth") == 64  # H.264 decoded
    # the plot beside it has a line at the same step
    line = page.evaluate(
        "() => document.getElementById('plot-steps').layout.shapes.slice(-1)[0].x0"
    )
    assert line == step
    page.screenshot(path=SHOTS / "episode.png", full_page=True)
    # the wrist camera's episode starts mid-GOP in its packed file: Chromium honours the
    # clip's edit list, so it is 6 s long and its first frame is step 0, not the lead-in
    wrist = "figure.player:nth-of-type(2) video"
    page.wait_for_function(f"document.querySelector({wrist!r}).readyState >= 2", timeout=15_000)
    assert page.eval_on_selector(wrist, "v => v.duration") == pytest.approx(6.0, abs=0.05)
    for seconds, step in ((0.05, 0), (2.55, 25)):
        column = page.eval_on_selector(wrist, _BAR_AT, seconds)
        assert column == step
    page.close()


def test_a_failure_plays_beside_the_champion_on_the_same_seed(browser, server):
    page = _sign_in(browser, server, "engineer")
    pair = page.locator("#pair-pick-place-35")
    pair.locator("button.play-together").click()
    for side in (1, 2):
        video = f"#pair-pick-place-35 figure.player:nth-of-type({side}) video"
        page.wait_for_function(f"document.querySelector({video!r}).currentTime > 1", timeout=15_000)
        assert page.eval_on_selector(video, "v => v.videoWidth") == 64  # AV1 decoded
    assert all(int(s) > 0 for s in pair.locator("output.step").all_inner_texts())
    page.screenshot(path=SHOTS / "candidate-pair.png", full_page=True)
    page.close()
