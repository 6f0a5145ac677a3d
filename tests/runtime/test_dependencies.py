"""Unreachable dependencies: clear errors naming the setting, bounded waits, readiness."""

import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli import app
from services.api.main import create_app
from services.runtime.dependencies import (
    DependencyUnavailable,
    check_database,
    check_mlflow,
    check_ray,
    wait_for,
)

DOWN = "postgresql+psycopg://flywheel:s3cret@127.0.0.1:1/flywheel"  # nothing listens on port 1


def test_an_unreachable_database_names_the_setting_and_hides_the_password(settings, monkeypatch):
    down = settings.updated(database={"url": DOWN})
    with pytest.raises(DependencyUnavailable) as caught:
        check_database(down)
    message = str(caught.value)
    assert "FLYWHEEL_DATABASE_URL" in message and "127.0.0.1:1" in message
    assert "s3cret" not in message

    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", DOWN)
    result = CliRunner().invoke(app, ["candidates"])
    assert result.exit_code == 1 and "FLYWHEEL_DATABASE_URL" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_mlflow_names_its_setting_after_one_quick_try(settings):
    # (An unreachable Ray address is wrapped the same way by check_ray, but Ray's client
    # itself waits about two minutes for a GCS before failing: too slow for the suite.)
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match="FLYWHEEL_MLFLOW_TRACKING_URI"):
        check_mlflow(settings.updated(registry={"mlflow_tracking_uri": "http://127.0.0.1:1"}))
    assert time.monotonic() - started < 30  # not MLflow's minutes of retries
    check_mlflow(settings)  # the embedded store
    check_ray(settings)  # the embedded default starts its own Ray: nothing to reach


def test_waiting_retries_with_backoff_then_gives_up():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise DependencyUnavailable("starting")
        return "up"

    assert wait_for(flaky, attempts=5, delay_s=1, sleep=waits.append) == "up"
    assert waits == [1, 2]

    def never():
        raise DependencyUnavailable("down")

    waits.clear()
    with pytest.raises(DependencyUnavailable, match="down"):
        wait_for(never, attempts=4, delay_s=1, max_delay_s=3, sleep=waits.append)
    assert waits == [1, 2, 3]


def test_readiness_says_why_and_liveness_does_not_depend_on_the_database(settings, monkeypatch):
    client = TestClient(create_app())
    assert client.get("/health").json() == {"status": "ok"}
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", DOWN)
    down = client.get("/health")
    assert down.status_code == 503 and "FLYWHEEL_DATABASE_URL" in down.json()["detail"]
    assert client.get("/live").json() == {"status": "ok"}
