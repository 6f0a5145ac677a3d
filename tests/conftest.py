"""Shared fixtures: an isolated FLYWHEEL_HOME per test, and stores on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from services.config import Settings, configure_runtime
from services.runtime.ray_driver import shutdown_ray
from services.runtime.ray_head import start_head, stop_head
from services.store import migrate

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Embedded settings rooted in a fresh temporary FLYWHEEL_HOME, store migrated."""
    return _settings(tmp_path, monkeypatch)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_settings(request, tmp_path, monkeypatch) -> Settings:
    """Like `settings`, once on SQLite and once on a fresh local PostgreSQL database."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return _settings(tmp_path, monkeypatch, database_url=url)


def _settings(tmp_path, monkeypatch, database_url: str | None = None) -> Settings:
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    for key in ("FLYWHEEL_DATABASE_URL", "FLYWHEEL_MLFLOW_TRACKING_URI", "FLYWHEEL_MODE"):
        monkeypatch.delenv(key, raising=False)
    # The CLI's identity: no token, and a login of this test's own, never the developer's.
    for key in ("FLYWHEEL_TOKEN", "FLYWHEEL_USER", "FLYWHEEL_API_URL", "FLYWHEEL_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    if database_url:
        monkeypatch.setenv("FLYWHEEL_DATABASE_URL", database_url)
    # Test episodes get random ids, so a hash-chosen hold-out would make counts flaky: tests
    # that hold episodes out say so themselves.
    monkeypatch.setenv("FLYWHEEL_HOLDOUT_SHARE", "0")
    settings = Settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    return settings


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the local server, dropped afterwards."""
    name = f"flywheel_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the marker says this needs the server; say why it is missing
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    from services.store.db import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def prefect_harness():
    """One real, temporary Prefect server (own SQLite database) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """One Ray head for the session's training jobs, as production keeps one (`flywheel up`).

    The embedded default starts and stops a head per training job (about 6 s on a quiet
    machine, far more under load, on every night of every test that trains);
    tests/training/test_ray_job.py covers that path on its own."""
    folder = tmp_path_factory.mktemp("ray-head")
    head = start_head(folder / "head", folder / "head.log")
    yield head
    # After Ray Train jobs the head's orderly shutdown runs into its 30 s drain; the group's
    # SIGKILL after 5 s leaves nothing behind either.
    stop_head(head.pid, timeout_s=5)


@pytest.fixture
def ray_jobs(ray_head, monkeypatch) -> str:
    """Training jobs of this test go to the session's Ray head; returns its job address."""
    monkeypatch.setenv("FLYWHEEL_RAY_JOB_ADDRESS", ray_head.job_address)
    return ray_head.job_address


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray_at_end():
    """Tests share one local Ray (started by the first training run); stop it at the end."""
    yield
    shutdown_ray()


@pytest.fixture
def toy_checkpoint(tmp_path):
    """A small, deterministic MLP checkpoint for the toy task."""
    import numpy as np
    import torch

    from policies import make_policy
    from policies.checkpoint import save_checkpoint
    from policies.mlp import MLPConfig
    from policies.normalization import NormalizationStats

    torch.manual_seed(0)
    config = MLPConfig(state_dim=4, action_dim=2, tasks=("toy-reach",), hidden=(8,))
    stats = NormalizationStats.from_arrays(
        np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32),
        np.zeros((20, 2), np.float32),
    )
    return save_checkpoint(tmp_path / "ckpt", make_policy(config), config, stats, {"step": 1})


@pytest.fixture
def register(toy_checkpoint):
    """Register the toy checkpoint in MLflow as a candidate: register(settings, id, parent)."""
    from services.registry import mlflow_registry

    def _register(settings, candidate_id="c1", parent=None):
        return mlflow_registry.register_candidate(
            settings,
            checkpoint_dir=toy_checkpoint,
            candidate_id=candidate_id,
            dataset_id="d1",
            parent_version=parent,
            flow_run_id="flow-1",
            code_version="abc",
            params={"lr": 0.001},
            losses=[(1, 0.5), (2, 0.25)],
            manifest_path=None,
        )

    return _register


def vision_checkpoint(path, encoding: str = "h264"):
    """A small, deterministic vision MLP for pick-place reading the front camera (24 px)."""
    import numpy as np
    import torch

    from policies import make_policy
    from policies.checkpoint import save_checkpoint
    from policies.images import CameraInput, ImageStats
    from policies.mlp import MLPConfig
    from policies.normalization import NormalizationStats
    from services.twin.tasks import make_env

    torch.manual_seed(0)
    env = make_env("pick-place")
    camera = CameraInput("front", 24, 24, encoding)
    config = MLPConfig(
        state_dim=len(env.reset(0)),
        action_dim=4,
        tasks=("pick-place",),
        hidden=(16,),
        cameras=(camera,),
        image_channels=(4, 8),
        image_keypoints=4,
        image_features=8,
    )
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    stats = NormalizationStats.from_arrays(
        rng.normal(size=(20, config.state_dim)).astype(np.float32),
        np.zeros((20, 4), np.float32),
        {"front": ImageStats.from_frames(frames)},
    )
    return save_checkpoint(path, make_policy(config), config, stats, {"step": 1})


def add_candidate(
    db_url: str,
    candidate_id: str,
    *,
    version: str,
    status: str,
    parent: str | None = None,
    dataset_id: str = "d1",
) -> None:
    """A candidate row (and its dataset row) as the train stage would leave it."""
    from services.store import session_scope
    from services.store.models import Candidate, Dataset

    with session_scope(db_url) as session:
        if session.get(Dataset, dataset_id) is None:
            session.add(Dataset(id=dataset_id, scheme="sirius", n_episodes=1, n_steps=1, path="x"))
            session.flush()
        session.add(
            Candidate(
                id=candidate_id,
                model_name="flywheel-policy",
                model_version=version,
                parent_version=parent,
                dataset_id=dataset_id,
                policy="mlp",
                status=status,
            )
        )
