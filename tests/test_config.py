"""Settings: grouped by concern, read from the same FLYWHEEL_ variables, checked at load."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.config import Settings
from services.run_settings import load_run_settings


def test_the_groups_read_the_flat_variables(monkeypatch, tmp_path):
    env = {
        "FLYWHEEL_HOME": str(tmp_path),
        "FLYWHEEL_ROLLOUT_STAGES": "[0.5, 1.0]",
        "FLYWHEEL_ROLLOUT_MIN_EPISODES": "6",
        "FLYWHEEL_TASKS": '["reach", "push"]',
        "FLYWHEEL_FLEET_TASKS": '["push"]',
        "FLYWHEEL_SCHEME": "iwr",
        "FLYWHEEL_TRAIN_STEPS": "300",
        "FLYWHEEL_AUTO_APPROVE": "true",
        "FLYWHEEL_EVAL_EPISODES": "20",
        "FLYWHEEL_DATABASE_URL": "postgresql+psycopg://flywheel:hunter2@db:5432/flywheel",
        "FLYWHEEL_KUBE_NAMESPACE": "fleet",
        "FLYWHEEL_API_PORT": "9470",
        "FLYWHEEL_NIGHT_LEASE_S": "60",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.rollout.stages == (0.5, 1.0) and settings.rollout.min_episodes == 6
    assert settings.fleet.tasks == ("reach", "push") and settings.fleet.shift_tasks == ("push",)
    assert settings.curation.scheme == "iwr" and settings.training.train_steps == 300
    assert settings.approval.auto_approve and settings.evaluation.eval_episodes == 20
    assert settings.db_url == env["FLYWHEEL_DATABASE_URL"]
    assert settings.kube.kube_namespace == "fleet" and settings.runtime.api_port == 9470
    assert settings.night.night_lease_s == 60
    # A record of the settings keeps no secret in clear.
    record = settings.model_dump_json()
    assert "hunter2" not in record and "dev-secret" not in record
    assert "postgresql+psycopg://flywheel:***@db:5432/flywheel" in record


def test_a_wrong_value_fails_at_load_and_names_the_variable(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_ROLLOUT_ALPHA", "2")
    with pytest.raises(ValidationError, match="alpha"):
        Settings()


def test_updated_changes_one_group_and_validates_it(monkeypatch):
    settings = Settings()
    staged = settings.updated(rollout={"stages": [1.0]})
    assert staged.rollout.stages == (1.0,) and staged.fleet == settings.fleet
    assert settings.rollout.stages == (0.25, 0.5, 1.0)  # frozen: the original is untouched
    with pytest.raises(ValidationError):
        settings.updated(rollout={"beta": 0})


@pytest.mark.parametrize(
    ("variable", "value", "closest"),
    [("FLYWHEEL_SCHEME", "sirus", "sirius"), ("FLYWHEEL_POLICY", "mpl", "mlp")],
)
def test_an_unknown_scheme_or_policy_fails_at_load_naming_the_closest(
    monkeypatch, variable, value, closest
):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"{variable}: .*did you mean '{closest}'"):
        load_run_settings()
