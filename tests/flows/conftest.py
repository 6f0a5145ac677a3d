"""Fixtures of the flow tests."""

from __future__ import annotations

import pytest

from services.config import Settings, configure_runtime
from services.store import migrate


@pytest.fixture
def toy_settings(tmp_path, monkeypatch, prefect_harness) -> Settings:
    """The toy task end to end on the embedded default (SQLite)."""
    monkeypatch.delenv("FLYWHEEL_DATABASE_URL", raising=False)
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLYWHEEL_TASKS", '["toy-reach"]')
    monkeypatch.setenv("FLYWHEEL_EVAL_EPISODES", "20")
    monkeypatch.setenv("FLYWHEEL_AUTO_APPROVE", "true")
    monkeypatch.setenv("FLYWHEEL_TRAIN_STEPS", "300")
    settings = Settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    return settings
