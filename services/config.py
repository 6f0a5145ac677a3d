"""Flywheel settings: the one module that reads the environment.

Every setting is an environment variable with the prefix ``FLYWHEEL_`` (``FLYWHEEL_HOME``,
``FLYWHEEL_DATABASE_URL``, ...). The embedded default keeps everything under
``FLYWHEEL_HOME``: a SQLite store, a local MLflow store, Ray's temp folder, Prefect's home and
the fleet log store. Production points the same code at PostgreSQL and servers by URL.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev-secret"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_", frozen=True, extra="ignore")

    # Root of the embedded installation; every default path below lives under it.
    home: Path = Path(".flywheel")
    # "embedded" runs on one machine; "production" refuses SQLite and placeholder secrets.
    mode: Literal["embedded", "production"] = "embedded"
    # SQLAlchemy URL of the Flywheel store; default: SQLite under home.
    database_url: str | None = None
    # MLflow tracking URI; default: a SQLite-backed store under home.
    mlflow_tracking_uri: str | None = None
    # Where the fleet uploads its logs: a folder or an object-store URI; default: home/fleet-logs.
    fleet_logs: str | None = None
    # Ray cluster address (host:port of the GCS, or "auto") that Flywheel's Ray drivers join:
    # closed-loop evaluation, and training when this process already is a Ray job's driver
    # (a KubeRay RayJob). None: each process starts a local Ray of its own.
    ray_address: str | None = None
    # Ray job submission address (the dashboard, http://host:8265): the train stage submits
    # its training there as a Ray job. None (and no ray_address): Flywheel starts a local
    # Ray head with the dashboard under home/ray for each training job and stops it after.
    # A head that requires a token (Ray's default) gets it from ~/.ray/auth_token, or from
    # RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH; RAY_AUTH_MODE=disabled for one that does not.
    ray_job_address: str | None = None
    # Ports of the services `flywheel up` runs on this machine (services/runtime/stack.py),
    # the API's also that of `flywheel serve`. A block of Flywheel's own, clear of Redis's
    # 6379 (Ray's default GCS port), PostgreSQL, MLflow's 5000 (macOS AirPlay), the 8000 and
    # 8080 of development servers and Ray's worker ports (10002-19999); each is checked
    # before its service starts, and a port in use names the setting that moves it.
    api_port: int = Field(default=8470, ge=1, le=65535)
    prefect_port: int = Field(default=8471, ge=1, le=65535)
    mlflow_port: int = Field(default=8472, ge=1, le=65535)
    # The Ray head's GCS (what FLYWHEEL_RAY_ADDRESS points at) and its dashboard (the job API).
    ray_port: int = Field(default=8473, ge=1, le=65535)
    ray_dashboard_port: int = Field(default=8474, ge=1, le=65535)
    # Name of the registered model in MLflow that candidates and the champion belong to.
    model_name: str = "flywheel-policy"
    # Approve candidates that pass the gate without a fleet manager (simulated fleet, demos).
    auto_approve: bool = False
    # How long a nightly run waits for a fleet manager to approve or reject a candidate that
    # needs a human (gate inconclusive, or passed without auto-approval) before it ends the
    # night with the candidate awaiting. None: 4 hours in production, 0 (do not hold the
    # machine) embedded. A decision made later is rolled out at the start of the next night.
    approval_wait_s: float | None = Field(default=None, ge=0)
    # How often the waiting run looks at the decisions table.
    approval_poll_s: float = Field(default=15.0, gt=0)
    # Staged rollout: share of the fleet on the candidate at each stage (the last, 1.0, makes
    # it champion); episodes its robots must work per stage; the sequential test's error
    # rates and the degradation (rate ratio against the champion) it is built to catch.
    rollout_stages: tuple[float, ...] = (0.25, 0.5, 1.0)
    rollout_min_episodes: int = Field(default=12, ge=1)
    rollout_alpha: float = Field(default=0.05, gt=0, lt=1)
    rollout_beta: float = Field(default=0.2, gt=0, lt=1)
    rollout_worse_ratio: float = Field(default=2.0, gt=1)
    rollout_failure_increase: float = Field(default=0.25, gt=0, lt=1)
    # Kubernetes: when a namespace is set, the rollout controller keeps one policy-server
    # Deployment per robot group on the version its robots run, and the train stage runs as
    # a KubeRay RayJob (services/kube). Inside the
    # cluster the pod's service account is used; from outside, a kubeconfig and context.
    kube_namespace: str | None = None
    kube_in_cluster: bool = False
    kubeconfig: str | None = None
    kube_context: str | None = None
    policy_server_image: str = "flywheel-policy-server:latest"
    # The image a KubeRay training job runs (the Flywheel image, with Ray and torch).
    training_image: str = "flywheel:latest"
    # Base URLs of the MLflow and Prefect UIs (e.g. http://mlflow:5000, http://prefect:4200),
    # for links from a candidate's page; unset: no links.
    mlflow_ui_url: str | None = None
    prefect_ui_url: str | None = None
    # Who the CLI acts as (approvals, rollouts); default: the operating-system login name.
    user: str | None = None
    # Secret used to sign API tokens; production refuses a placeholder.
    secret_key: str = "dev-secret"
    # Tasks the policy serves: the lab's demonstrations and the evaluation cover all of them.
    tasks: tuple[str, ...] = ("pick-place",)
    # Tasks the simulated fleet's robots work (a subset of ``tasks``); default: all of them.
    # Narrowing it mid-run is a shift in the task mix: old tasks are still evaluated.
    fleet_tasks: tuple[str, ...] | None = None
    # Seeds the simulated fleet's and the lab's initial conditions (benchmarks vary it).
    sim_seed: int = Field(default=0, ge=0)
    # Fixed evaluation seeds per task (candidate and champion run on the same ones).
    eval_episodes: int = Field(default=100, ge=1)
    # Most steps a dataset keeps (Sirius's memory cap); None keeps every episode.
    dataset_max_steps: int | None = Field(default=None, ge=1)
    # How each night weights the steps of its dataset: sirius, iwr, hg-dagger or uniform.
    scheme: str = "sirius"
    # Share of a dataset's steps replayed from episodes the champion was trained on; None
    # replays all of them, 0 trains on new episodes alone (see services/curation/manifest).
    replay_share: float | None = Field(default=None, ge=0, lt=1)
    # Share of deployment episodes kept out of every training set (chosen by episode-id hash,
    # so the same ones every night) for offline evaluation of candidates.
    holdout_share: float = Field(default=0.1, ge=0, lt=1)
    # The registered policy each night trains ("mlp" or "act", see policies/); switching
    # trains the next candidate afresh instead of fine-tuning the champion.
    policy: str = "mlp"
    # How long a nightly run holds its lease without finishing a stage; a run on another
    # host that stays silent longer is taken for dead and the next trigger takes over.
    night_lease_s: float = Field(default=6 * 3600, gt=0)
    # Optimiser steps of each night's fine-tuning run.
    train_steps: int = Field(default=3000, ge=1)

    @model_validator(mode="after")
    def _fleet_works_known_tasks(self) -> Settings:
        if self.fleet_tasks is not None:
            if not self.fleet_tasks:
                raise ValueError("FLYWHEEL_FLEET_TASKS names no task: leave it unset for all")
            extra = sorted(set(self.fleet_tasks) - set(self.tasks))
            if extra:
                raise ValueError(
                    f"FLYWHEEL_FLEET_TASKS names {extra}, which FLYWHEEL_TASKS does not list"
                )
        return self

    @property
    def shift_tasks(self) -> tuple[str, ...]:
        """The tasks the fleet works tonight."""
        return self.fleet_tasks or self.tasks

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.mode == "production":
            if self.db_url.startswith("sqlite"):
                raise ValueError(
                    "production mode refuses SQLite: set FLYWHEEL_DATABASE_URL to a PostgreSQL URL"
                )
            if self.secret_key in PLACEHOLDER_SECRETS:
                raise ValueError("production mode refuses a placeholder FLYWHEEL_SECRET_KEY")
        return self

    @cached_property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def approval_wait(self) -> float:
        if self.approval_wait_s is not None:
            return self.approval_wait_s
        return 4 * 3600.0 if self.mode == "production" else 0.0

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'flywheel.db'}"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def fleet_log_uri(self) -> str:
        return self.fleet_logs or str(self.root / "fleet-logs")

    @property
    def episode_store(self) -> Path:
        return self.root / "episodes"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def ray_dir(self) -> Path:
        return self.root / "ray"

    @property
    def prefect_home(self) -> Path:
        return self.root / "prefect"


def get_settings() -> Settings:
    """Read settings from the environment now (not cached: tests and the CLI change it)."""
    return Settings()


def configure_runtime(settings: Settings) -> None:
    """Point the third-party libraries at FLYWHEEL_HOME and keep them quiet and offline.

    Prefect, MLflow and Ray read their own environment variables; this is the one place
    that sets them, before any of them is imported.
    """
    settings.root.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(settings.prefect_home)
    os.environ["MLFLOW_TRACKING_URI"] = settings.mlflow_uri
    defaults = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # Prefect's temporary server gets 20 s to start by default: too little on a busy
        # two-core machine, where a nightly run would fail before its first stage.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        # MLflow writes run links to stdout against a tracking server: it would corrupt --json.
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Ray heads require a token by default; drivers and job clients send it only in
        # token mode (see services/runtime/ray_head.py).
        "RAY_AUTH_MODE": "token",
        "RAY_DEDUP_LOGS": "1",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
        "RAY_AIR_NEW_OUTPUT": "0",
        "MUJOCO_GL": "egl",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
