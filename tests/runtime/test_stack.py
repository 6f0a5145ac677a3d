"""Production mode on this machine: `flywheel up`, a short night against it, `flywheel down`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from services.runtime.stack import DEFAULT_ADMIN_URL, Stack, down, status, up

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def stack(tmp_path):
    stack = Stack(
        home=tmp_path / "home",
        prefix=f"flywheel_up_{uuid.uuid4().hex[:8]}",
        ports={name: _free_port() for name in ("prefect", "mlflow", "api", "ray", "ray_dashboard")},
    )
    yield stack
    down(stack)
    admin = create_engine(DEFAULT_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for suffix in ("", "_mlflow", "_prefect"):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{stack.prefix}{suffix}" WITH (FORCE)'))
    admin.dispose()


def _ray_jobs(env: dict[str, str]) -> dict[str, str]:
    """The head's submitted jobs and their status (a driver that joined the head, such as the
    evaluation's, is listed too, without a submission id), asked in a process of its own:
    Ray reads RAY_AUTH_MODE once per process, and this one may have started Ray without a
    token."""
    ask = (
        "import json, sys; from ray.job_submission import JobSubmissionClient; "
        "jobs = JobSubmissionClient(sys.argv[1]).list_jobs(); "
        "print(json.dumps({j.submission_id: j.status.value for j in jobs if j.submission_id}))"
    )
    answer = subprocess.run(
        [sys.executable, "-c", ask, env["FLYWHEEL_RAY_JOB_ADDRESS"]],
        env={**os.environ, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(answer.stdout)


def test_a_night_runs_end_to_end_in_production_mode_and_down_stops_everything(stack):
    env = up(stack)
    assert status(stack) == {"prefect": True, "mlflow": True, "api": True, "ray": True}
    assert env["FLYWHEEL_DATABASE_URL"].startswith("postgresql")
    assert env["FLYWHEEL_MODE"] == "production" and len(env["FLYWHEEL_SECRET_KEY"]) > 30
    assert up(stack) == env  # already up: starts nothing, same settings
    api = f"http://127.0.0.1:{stack.ports['api']}"
    with urllib.request.urlopen(f"{api}/health", timeout=5) as answer:
        assert json.loads(answer.read()) == {"status": "ok"}

    toy = {
        "FLYWHEEL_TASKS": '["toy-reach"]',
        "FLYWHEEL_EVAL_EPISODES": "20",
        "FLYWHEEL_TRAIN_STEPS": "300",
        "FLYWHEEL_AUTO_APPROVE": "true",
    }
    flywheel = str(Path(sys.executable).with_name("flywheel"))
    done = subprocess.run(
        [flywheel, "nightly", "--nights", "2", "--robots", "2", "--episodes", "4", "--json"],
        env={**os.environ, **env, **toy},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = json.loads(done.stdout)  # nothing but the JSON on stdout
    assert first["candidate"]["verdict"] == "pass" and first["champion_after"] == "1"
    assert second["fleet"]["episodes"] == 8 and second["candidate"]["parent"] == "1"
    # both nights trained as Ray jobs on the stack's head, one per candidate
    assert _ray_jobs(env) == {
        f"train-{night['candidate']['id']}": "SUCCEEDED" for night in (first, second)
    }
    # the nights are in PostgreSQL, the models in the MLflow server's registry
    engine = create_engine(env["FLYWHEEL_DATABASE_URL"])
    with engine.connect() as conn:
        completed = text("SELECT count(*) FROM nightly_runs WHERE state = 'completed'")
        assert conn.scalar(completed) == 2
    engine.dispose()
    # lineage on PostgreSQL: the second model back to the robots and interventions behind it
    done = subprocess.run(
        [flywheel, "lineage", "--model", second["candidate"]["version"]],
        env={**os.environ, **env, **toy},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    chain = json.loads(done.stdout)["chain"]
    assert [m["model_version"] for m in chain] == [second["candidate"]["version"], "1"]
    assert set(chain[0]["episodes_by_robot"]) == {"lab", "robot-00", "robot-01"}
    assert chain[0]["interventions"] > 0 and chain[1]["interventions"] == 0
    registry = f"{env['FLYWHEEL_MLFLOW_TRACKING_URI']}/api/2.0/mlflow/registered-models/get"
    with urllib.request.urlopen(f"{registry}?name=flywheel-policy", timeout=5) as answer:
        assert json.loads(answer.read())["registered_model"]["name"] == "flywheel-policy"

    assert down(stack) == ["api", "ray", "mlflow", "prefect"]
    assert not any(status(stack).values())


def test_production_mode_refuses_sqlite_and_placeholder_secrets(tmp_path):
    flywheel = str(Path(sys.executable).with_name("flywheel"))
    base = {**os.environ, "FLYWHEEL_HOME": str(tmp_path), "FLYWHEEL_MODE": "production"}
    base.pop("FLYWHEEL_DATABASE_URL", None)
    refused = subprocess.run([flywheel, "candidates"], env=base, capture_output=True, text=True)
    assert refused.returncode == 1 and "refuses SQLite" in refused.stdout
    base["FLYWHEEL_DATABASE_URL"] = DEFAULT_ADMIN_URL
    refused = subprocess.run([flywheel, "candidates"], env=base, capture_output=True, text=True)
    assert refused.returncode == 1 and "FLYWHEEL_SECRET_KEY" in refused.stdout
