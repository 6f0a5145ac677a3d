"""A home made before the layout of issue 17 still works: its champion loads, evaluates and
serves with today's code.

tests/fixtures/home-401b182.tar.gz is a FLYWHEEL_HOME that commit 401b182 (the last layout
before the move) made with two toy nights:

    FLYWHEEL_HOME=/tmp/flywheel-home-401b182 FLYWHEEL_TASKS='["toy-reach"]' \
    FLYWHEEL_EVAL_EPISODES=20 FLYWHEEL_AUTO_APPROVE=true FLYWHEEL_TRAIN_STEPS=300 \
    flywheel nightly --nights 2 --robots 2 --episodes 4

(without its prefect/, ray/, ray_results/ and model caches). Its registered models carry that
commit's copy of services/registry/pyfunc.py (MLflow models-from-code), which imports modules
by path: a moved module would break them here.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from bench.flywheel import relocate_home
from policies.checkpoint import checkpoint_checksum, load_checkpoint
from services.api.main import create_app
from services.config import configure_runtime, get_settings
from services.evaluation.closed_loop import evaluate_version
from services.registry.mlflow_registry import champion_version, load_policy, policy_checkpoint
from services.serving.credentials import enroll_robot
from services.store import migrate, session_scope

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).parent / "fixtures" / "home-401b182.tar.gz"
MADE_AT = "/tmp/flywheel-home-401b182"
STATE = np.array([0.1, -0.2, 0.3, 0.4], np.float32)


@pytest.fixture
def old_home(tmp_path, monkeypatch):
    with tarfile.open(FIXTURE) as archive:
        archive.extractall(tmp_path, filter="data")
    home = tmp_path / Path(MADE_AT).name
    relocate_home(home, MADE_AT, str(home))
    monkeypatch.delenv("FLYWHEEL_DATABASE_URL", raising=False)
    monkeypatch.delenv("FLYWHEEL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("FLYWHEEL_HOME", str(home))
    monkeypatch.setenv("FLYWHEEL_TASKS", '["toy-reach"]')
    settings = get_settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    return settings


def test_the_champion_of_an_old_home_loads_and_acts(old_home):
    assert champion_version(old_home) == "1"
    policy = load_policy(old_home, "1")
    action = policy.act(STATE, "toy-reach")
    assert action.shape == (2,) and np.all(np.isfinite(action))
    assert np.array_equal(
        action, load_checkpoint(policy_checkpoint(old_home, "1")).act(STATE, "toy-reach")
    )


def test_the_champion_of_an_old_home_serves_through_its_own_pyfunc_file(old_home):
    model = mlflow.pyfunc.load_model("models:/flywheel-policy@champion")
    out = model.predict(pd.DataFrame({"task": ["toy-reach"], "observation.state": [STATE]}))
    expected = load_policy(old_home, "1").act(STATE, "toy-reach")
    np.testing.assert_allclose(out["action"][0], expected, rtol=1e-6)


def test_the_champion_of_an_old_home_evaluates_in_closed_loop(old_home):
    # Seeds the old home never evaluated (it used 0-19), so these episodes run now, on Ray.
    seeds = list(range(1000, 1004))
    outcomes = evaluate_version(
        old_home, "1", policy_checkpoint(old_home, "1"), ["toy-reach"], seeds
    )
    assert sorted(outcomes["toy-reach"]) == seeds
    assert all(isinstance(success, bool) for success in outcomes["toy-reach"].values())


def test_a_robot_of_an_old_home_is_served_the_champion_with_its_checksum(old_home):
    # Robots of a home made before credentials are enrolled by an admin and keep their version.
    with session_scope(old_home.db_url, write=True) as session:
        credential = enroll_robot(
            session=session, robot_id="robot-00", tasks=["toy-reach"], group="default", actor="t"
        )
    with TestClient(create_app()) as http:
        answer = http.get(
            "/robots/robot-00/assignment", headers={"Authorization": f"Bearer {credential}"}
        ).json()
    assert answer["model_version"] == "1"
    assert answer["checksum"] == checkpoint_checksum(policy_checkpoint(old_home, "1"))
