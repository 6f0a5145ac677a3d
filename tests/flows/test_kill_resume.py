"""A night killed at any stage boundary resumes, and ends where an uninterrupted night ends.

`flywheel nightly` runs as a real process on a real FLYWHEEL_HOME. The test watches the store
from outside and SIGKILLs the process (its whole process group: Ray's and Prefect's helpers
too, as when a machine or pod dies) the moment a stage's output appears, then starts the
night again. Each run is killed one stage further on; the last one runs to the end. Its end
state, the store's tables row by row, the MLflow registry and the files under FLYWHEEL_HOME,
must equal that of one uninterrupted night from the same logs. No hooks in production code:
every boundary is a row that the stage itself writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

pytestmark = [pytest.mark.slow, pytest.mark.fault]

# This tree's CLI (python -m cli from the repository root), not an installed console script.
FLYWHEEL = [sys.executable, "-m", "cli"]
REPO = Path(__file__).resolve().parents[2]
NIGHT = "SELECT id FROM nightly_runs WHERE id > :after ORDER BY id DESC LIMIT 1"
# Where each run is killed, in order: the first SQL that returns a row for the run's night.
# The MLflow boundary is inside the train stage: the candidate's MLflow run is open, its model
# not registered yet (the registry's own two writes).
BOUNDARIES = {
    "ingested": "SELECT 1 FROM nightly_runs WHERE id = :night AND ingest_run_id IS NOT NULL",
    "dataset built": "SELECT 1 FROM nightly_runs WHERE id = :night AND dataset_id IS NOT NULL",
    "mlflow run opened": "mlflow:SELECT 1 FROM runs WHERE name LIKE 'candidate-%'",
    "candidate registered": (
        "SELECT 1 FROM nightly_runs WHERE id = :night AND candidate_id IS NOT NULL"
    ),
    "gate recorded": (
        "SELECT 1 FROM decisions d JOIN nightly_runs n ON n.candidate_id = d.candidate_id "
        "WHERE n.id = :night AND d.kind = 'gate'"
    ),
    "approved": (
        "SELECT 1 FROM decisions d JOIN nightly_runs n ON n.candidate_id = d.candidate_id "
        "WHERE n.id = :night AND d.kind = 'approval'"
    ),
    "rollout started": (
        "SELECT 1 FROM rollouts r JOIN nightly_runs n ON n.candidate_id = r.candidate_id "
        "WHERE n.id = :night"
    ),
}
# Columns that differ between any two runs however correct they are: surrogate keys, clocks,
# and the ids of processes and flow runs.
VOLATILE = {
    "id",
    "at",
    "created_at",
    "started_at",
    "finished_at",
    "ingested_at",
    "updated_at",
    "last_seen",
    "flow_run_id",
    "mlflow_run_id",
    "ingest_run_id",
    "train_seconds",
    # What one pass of an ingest run found already indexed: a run continued after a kill
    # finds its own episodes there.
    "skipped",
}
CLOCK = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")


@pytest.fixture(scope="module")
def lab_logs(tmp_path_factory) -> Path:
    """The lab's demonstrations of the toy task: the logs of the night under test."""
    from sim.lab import record_lab_demos

    logs = tmp_path_factory.mktemp("lab-logs")
    record_lab_demos(("toy-reach",), 6, logs)
    return logs


def _home(tmp_path: Path, name: str, lab_logs: Path) -> dict:
    home = tmp_path / name
    shutil.copytree(lab_logs, home / "fleet-logs")
    import prefect.settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLYWHEEL_", "PREFECT_"))}
    env.update(
        FLYWHEEL_HOME=str(home),
        FLYWHEEL_TASKS='["toy-reach"]',
        FLYWHEEL_EVAL_EPISODES="20",
        FLYWHEEL_TRAIN_STEPS="50",
        FLYWHEEL_AUTO_APPROVE="true",
        # The candidate id includes the code's commit, and others may commit to this checkout
        # while the test runs: the runs see no git checkout, as an installed package does.
        GIT_DIR=str(tmp_path / "no-git"),
        # One server for every run, so that a run does not start its own.
        PREFECT_API_URL=prefect.settings.PREFECT_API_URL.value(),
    )
    return env


def _db_url(env: dict) -> str:
    return f"sqlite:///{env['FLYWHEEL_HOME']}/flywheel.db"


def _mlflow_url(env: dict) -> str:
    return f"sqlite:///{env['FLYWHEEL_HOME']}/mlflow.db"


def _scalar(url: str, sql: str, **params):
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    except Exception:  # tables not created yet, or written by the run this instant
        return None
    finally:
        engine.dispose()


def _nightly(env: dict, kill_when: str | None = None) -> dict | None:
    """Run `flywheel nightly` on the logs there are; SIGKILL it when ``kill_when`` is true."""
    db = _db_url(env)
    after = _scalar(db, "SELECT max(id) FROM nightly_runs") or 0
    run = subprocess.Popen(
        [*FLYWHEEL, "nightly", "--no-simulate", "--json"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if kill_when is None:
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
        [report] = json.loads(out)
        return report
    url, sql = (db, kill_when)
    if kill_when.startswith("mlflow:"):
        url, sql = _mlflow_url(env), kill_when.removeprefix("mlflow:")
    night = None
    while run.poll() is None:
        night = night or _scalar(db, NIGHT, after=after)
        if night is not None and _scalar(url, sql, night=night) is not None:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
            return None
        time.sleep(0.02)
    _, err = run.communicate()
    pytest.fail(f"the night ended (exit {run.returncode}) before it could be killed: {err[-3000:]}")


def _tables(url: str, home: str) -> dict[str, list]:
    """Every table of the store as a sorted list of rows, less the volatile columns, the
    clock readings in JSON columns and the FLYWHEEL_HOME in paths."""
    engine = create_engine(url, poolclass=NullPool)
    tables = {}
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            if name in ("alembic_version", "nightly_runs"):
                continue
            rows = conn.execute(text(f"SELECT * FROM {name}")).mappings().all()
            tables[name] = sorted(
                CLOCK.sub(
                    "<time>",
                    json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, default=str),
                ).replace(home, "<home>")
                for r in rows
            )
    engine.dispose()
    return tables


def _registry(env: dict) -> dict:
    engine = create_engine(_mlflow_url(env), poolclass=NullPool)
    with engine.connect() as conn:
        registry = {
            "runs": sorted(
                conn.execute(
                    text("SELECT name, status FROM runs WHERE lifecycle_stage = 'active'")
                ).all()
            ),
            "versions": sorted(
                conn.execute(text("SELECT name, version, current_stage FROM model_versions")).all()
            ),
            "aliases": sorted(
                conn.execute(text("SELECT alias, version FROM registered_model_aliases")).all()
            ),
        }
    engine.dispose()
    return registry


def _files(env: dict) -> list[str]:
    """The files the night left, by path under FLYWHEEL_HOME (MLflow's artifacts by count)."""
    home = Path(env["FLYWHEEL_HOME"])
    kept = ("episodes", "datasets", "checkpoints", "model-cache")
    return sorted(
        str(p.relative_to(home))
        for folder in kept
        for p in (home / folder).rglob("*")
        if p.is_file() and "ray_results" not in p.parts
    )


def _end_state(env: dict, report: dict) -> dict:
    summary = {k: v for k, v in report.items() if k != "night"}
    summary["candidate"] = {k: v for k, v in summary["candidate"].items() if k != "train_seconds"}
    return {
        "tables": _tables(_db_url(env), env["FLYWHEEL_HOME"]),
        "registry": _registry(env),
        "files": _files(env),
        "report": summary,
    }


def test_a_night_killed_at_every_stage_boundary_resumes_to_the_same_end(
    tmp_path, lab_logs, prefect_harness
):
    straight = _home(tmp_path, "straight", lab_logs)
    killed = _home(tmp_path, "killed", lab_logs)

    expected = _end_state(straight, _nightly(straight))

    for sql in BOUNDARIES.values():
        _nightly(killed, kill_when=sql)
    report = _nightly(killed)
    got = _end_state(killed, report)

    assert got["report"] == expected["report"]
    assert got["tables"] == expected["tables"]
    assert got["registry"] == expected["registry"]
    assert got["files"] == expected["files"]

    engine = create_engine(_db_url(killed), poolclass=NullPool)
    with engine.connect() as conn:
        states = [s for (s,) in conn.execute(text("SELECT state FROM nightly_runs ORDER BY id"))]
    engine.dispose()
    assert states == ["abandoned"] * len(BOUNDARIES) + ["completed"]
