"""/metrics serves a snapshot: scrapes within FLYWHEEL_METRICS_TTL_S run no SQL at all, and
the first scrape after it sees the store as it is then."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from services.api.main import create_app
from services.api.metrics import MetricsSnapshot
from services.store.db import engine_for
from tests.conftest import add_candidate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def statements(settings):
    """The SQL statements the store's engine runs, as a growing list."""
    ran: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        ran.append(statement)

    engine = engine_for(settings.db_url)
    event.listen(engine, "before_cursor_execute", count)
    yield ran
    event.remove(engine, "before_cursor_execute", count)


def _trained(text: str) -> str:
    [line] = [x for x in text.splitlines() if x.startswith("flywheel_candidates_trained_total ")]
    return line


def test_scrapes_within_the_ttl_run_no_sql(settings, statements, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_METRICS_TTL_S", "30")
    app = create_app()
    clock = Clock()
    app.state.metrics_snapshot = MetricsSnapshot(clock=clock)
    client = TestClient(app)

    first = client.get("/metrics")
    assert first.status_code == 200 and statements  # the first scrape reads the store
    assert _trained(first.text) == "flywheel_candidates_trained_total 0.0"
    add_candidate(settings.db_url, "c1", version="1", status="registered")
    with engine_for(settings.db_url).begin() as conn:
        conn.exec_driver_sql("UPDATE candidates SET train_seconds = 12.0")

    statements.clear()
    for _ in range(5):
        clock.now += 5  # 25 s in all: inside the TTL
        again = client.get("/metrics")
        assert again.status_code == 200 and again.text == first.text
    assert statements == []

    clock.now += 5  # 30 s: the snapshot is due
    fresh = client.get("/metrics")
    assert statements
    assert _trained(fresh.text) == "flywheel_candidates_trained_total 1.0"
    assert fresh.headers["content-type"].startswith("text/plain")


def test_a_ttl_of_zero_reads_the_store_on_every_scrape(settings, statements, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_METRICS_TTL_S", "0")
    client = TestClient(create_app())
    client.get("/metrics")
    once = len(statements)
    client.get("/metrics")
    assert once > 0 and len(statements) == 2 * once


def test_one_scrape_refreshes_while_the_others_get_the_previous_page(settings, monkeypatch):
    from services.api import metrics

    pages = iter([b"old\n", b"new\n"])
    entered, release = threading.Event(), threading.Event()

    def render(settings) -> bytes:
        page = next(pages)
        if page == b"new\n":
            entered.set()
            release.wait(30)
        return page

    monkeypatch.setattr(metrics, "render", render)
    clock = Clock()
    snapshot = MetricsSnapshot(clock=clock)
    assert snapshot.page(settings) == b"old\n"
    clock.now += settings.metrics.ttl_s
    refresher = threading.Thread(target=snapshot.page, args=(settings,))
    refresher.start()
    assert entered.wait(30)
    assert snapshot.page(settings) == b"old\n"  # not blocked behind the refresh, no 2nd render
    release.set()
    refresher.join(30)
    assert snapshot.page(settings) == b"new\n"
