"""Flywheel settings: the one module that reads the environment.

Every setting is an environment variable with the prefix ``FLYWHEEL_`` (``FLYWHEEL_HOME``,
``FLYWHEEL_DATABASE_URL``, ...). The embedded default keeps everything under
``FLYWHEEL_HOME``: a SQLite store, a local MLflow store, Ray's temp folder, Prefect's home and
the fleet log store. Production points the same code at PostgreSQL and servers by URL.

The settings are grouped by concern (``settings.rollout.stages``, ``settings.curation.scheme``);
each group reads its own variables, whose names are those of the flat settings before them
(``FLYWHEEL_ROLLOUT_STAGES``, ``FLYWHEEL_SCHEME``). ``Settings.updated`` changes a few fields
of some groups, validated. Whether ``scheme`` and ``policy`` name registered ones is checked
above the registries, by services/run_settings.py.
"""

from __future__ import annotations

import os
import re
from functools import cached_property, lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_serializer, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

PLACEHOLDER_SECRETS = {"", "change-me", "changeme", "secret", "dev-secret"}


def _flywheel(prefix: str = "FLYWHEEL_") -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, frozen=True, extra="ignore")


def _hide_password(url: str | None) -> str | None:
    """A URL as a record may show it: the password of a database URL masked."""
    if url is None or "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL (an http:// tracking server): no password in it
        return url


class DatabaseSettings(BaseSettings):
    model_config = _flywheel("FLYWHEEL_DATABASE_")

    # SQLAlchemy URL of the Flywheel store (FLYWHEEL_DATABASE_URL); default: SQLite under home.
    url: str | None = None

    @field_serializer("url", when_used="json")
    def _masked(self, url: str | None) -> str | None:
        return _hide_password(url)


class RegistrySettings(BaseSettings):
    model_config = _flywheel()

    # MLflow tracking URI; default: a SQLite-backed store under home.
    mlflow_tracking_uri: str | None = None
    # Name of the registered model in MLflow that candidates and the champion belong to.
    model_name: str = "flywheel-policy"

    @field_serializer("mlflow_tracking_uri", when_used="json")
    def _masked(self, url: str | None) -> str | None:
        return _hide_password(url)


class RuntimeSettings(BaseSettings):
    model_config = _flywheel()

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
    # Prefect's server (FLYWHEEL_PREFECT_PORT).
    prefect_port: int = Field(default=8471, ge=1, le=65535)
    # MLflow's tracking server (FLYWHEEL_MLFLOW_PORT).
    mlflow_port: int = Field(default=8472, ge=1, le=65535)
    # The Ray head's GCS (what FLYWHEEL_RAY_ADDRESS points at).
    ray_port: int = Field(default=8473, ge=1, le=65535)
    # The Ray head's dashboard (the job API).
    ray_dashboard_port: int = Field(default=8474, ge=1, le=65535)


class FleetSettings(BaseSettings):
    model_config = _flywheel()

    # Tasks the policy serves: the lab's demonstrations and the evaluation cover all of them.
    tasks: tuple[str, ...] = ("pick-place",)
    # Tasks the simulated fleet's robots work (a subset of ``tasks``); default: all of them.
    # Narrowing it mid-run is a shift in the task mix: old tasks are still evaluated.
    fleet_tasks: tuple[str, ...] | None = None
    # Seeds the simulated fleet's and the lab's initial conditions (benchmarks vary it).
    sim_seed: int = Field(default=0, ge=0)
    # Where the fleet uploads its logs: a folder or an object-store URI; default: home/fleet-logs.
    fleet_logs: str | None = None
    # The simulated robots' cameras (FLYWHEEL_SIM_CAMERAS='["front", "wrist"]'; Meta-World's:
    # front, side, top, wrist; the toy task has none; [] records no frames), their size in
    # pixels a side and their frame rate. Rendering costs shift time: bench/render.py.
    sim_cameras: tuple[str, ...] = ("front", "wrist")
    sim_camera_px: int = Field(default=64, ge=16, le=480)
    sim_camera_hz: float = Field(default=20.0, gt=0)
    # Heartbeat plausibility (docs/security.md): the shortest episode a robot can work; a
    # heartbeat claiming more episodes than its active seconds allow at this pace is refused.
    # The simulated fleet's shortest possible one is a single step of the toy task (10 Hz).
    fleet_min_episode_seconds: float = Field(default=0.1, gt=0)
    # Operator takeovers one episode can plausibly have (the simulated operator: at most 3).
    fleet_max_interventions_per_episode: int = Field(default=20, ge=1)
    # Seconds a heartbeat's active time may exceed the wall time since the robot's previous
    # heartbeat (or its enrollment): clock skew, and a simulator faster than real time.
    fleet_heartbeat_slack_s: float = Field(default=60.0, ge=0)
    # After a robot's assignment changes, how long its heartbeats may still report the
    # previous version (the robot switches at its next look, between heartbeats).
    fleet_version_grace_s: float = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _fleet_works_known_tasks(self) -> FleetSettings:
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


class CurationSettings(BaseSettings):
    model_config = _flywheel()

    # How each night weights the steps of its dataset: a registered weighting scheme
    # (services/curation/weights.py: sirius, iwr, hg-dagger or uniform).
    scheme: str = "sirius"
    # Share of a dataset's steps replayed from episodes the champion was trained on; None
    # replays all of them, 0 trains on new episodes alone (see services/curation/manifest).
    replay_share: float | None = Field(default=None, ge=0, lt=1)
    # Share of deployment episodes kept out of every training set (chosen by episode-id hash,
    # so the same ones every night) for offline evaluation of candidates.
    holdout_share: float = Field(default=0.1, ge=0, lt=1)
    # Most steps a dataset keeps (Sirius's memory cap); None keeps every episode.
    dataset_max_steps: int | None = Field(default=None, ge=1)


class TrainingSettings(BaseSettings):
    model_config = _flywheel()

    # The registered policy each night trains ("mlp" or "act", see policies/); switching
    # trains the next candidate afresh instead of fine-tuning the champion.
    policy: str = "mlp"
    # Optimiser steps of each night's fine-tuning run.
    train_steps: int = Field(default=3000, ge=1)
    # Ray Train data-parallel workers (FLYWHEEL_TRAINING_WORKERS): each computes the
    # gradient of its share of every minibatch, DDP averages them (gloo on CPUs, NCCL on
    # GPUs); the minibatch stays TrainConfig.batch_size in all, so the model is the same.
    training_workers: int = Field(default=1, ge=1)
    # CPUs Ray reserves for each worker (FLYWHEEL_TRAINING_CPUS_PER_WORKER).
    training_cpus_per_worker: float = Field(default=1.0, gt=0)
    # One GPU per worker, the worker's device chosen by Ray (FLYWHEEL_TRAINING_USE_GPU);
    # refused before training starts where Flywheel's own local Ray would have no GPU.
    training_use_gpu: bool = False
    # What a vision policy sees (FLYWHEEL_TRAIN_CAMERAS='["front"]'): the stored cameras
    # (observation.images.<name>) each night's policy is trained on; [] trains on the state
    # alone. The policy's cameras are the robots' too, so they must be among the fleet's.
    train_cameras: tuple[str, ...] = ()
    # Side in pixels every camera's frames are resized to for the policy.
    train_image_px: int = Field(default=64, ge=8)
    # Random shift augmentation in pixels (0: off); see services/training/config.py.
    train_augment_shift: int = Field(default=4, ge=0)
    # DataLoader processes decoding a vision run's frames (0: in the training process).
    train_loader_workers: int = Field(default=2, ge=0)


class EvaluationSettings(BaseSettings):
    model_config = _flywheel()

    # Fixed evaluation seeds per task (candidate and champion run on the same ones).
    eval_episodes: int = Field(default=100, ge=1)
    # Tasks whose evidence comes from the field, not a simulator twin (FLYWHEEL_FIELD_TASKS):
    # candidates are judged on them by their shadow run and the field gate's thresholds
    # (services/shadow), never in simulation, and start their rollout at the canary.
    field_tasks: tuple[str, ...] = ()


class ShadowSettings(BaseSettings):
    model_config = _flywheel("FLYWHEEL_SHADOW_")

    # Where shadow actions are logged (FLYWHEEL_SHADOW_LOG); None: <home>/shadow-log.
    log: Path | None = None
    # Steps waiting for the shadow policy; when full, steps are dropped and counted.
    queue_steps: int = Field(default=4096, ge=1)
    # Shadow episodes per field task before a night judges the candidate (the field gate's
    # thresholds may ask for more).
    min_episodes: int = Field(default=8, ge=1)
    # Nights a candidate waits for that many shadow episodes; then it is judged on what
    # there is (inconclusive where too little).
    max_nights: int = Field(default=3, ge=1)
    # RMS action difference under which the candidate "agrees" with the champion.
    tolerance: float = Field(default=0.1, gt=0)
    # Seconds before a takeover in which the candidate is compared with the champion.
    pre_takeover_s: float = Field(default=1.0, gt=0)
    # The share of the fleet a field-evidence candidate starts on, when the rollout plan's
    # first stage is the whole fleet.
    canary_share: float = Field(default=0.25, gt=0, lt=1)


class ApprovalSettings(BaseSettings):
    model_config = _flywheel()

    # Approve candidates that pass the gate without a fleet manager (simulated fleet, demos).
    auto_approve: bool = False
    # How long a nightly run waits for a fleet manager to approve or reject a candidate that
    # needs a human (gate inconclusive, or passed without auto-approval) before it ends the
    # night with the candidate awaiting. None: 4 hours in production, 0 (do not hold the
    # machine) embedded (Settings.approval_wait). A decision made later is rolled out at the
    # start of the next night.
    approval_wait_s: float | None = Field(default=None, ge=0)
    # How often the waiting run looks at the decisions table.
    approval_poll_s: float = Field(default=15.0, gt=0)


class RolloutSettings(BaseSettings):
    model_config = _flywheel("FLYWHEEL_ROLLOUT_")

    # A JSON plan file declaring each stage (services/rollout/spec.py, docs/rollout.md); the
    # settings below fill in what its stages leave out. None: every stage alike, from these.
    plan: Path | None = None
    # Share of the fleet on the candidate at each stage (the last, 1.0, makes it champion).
    stages: tuple[float, ...] = (0.25, 0.5, 1.0)
    # Episodes the candidate's robots must work per stage.
    min_episodes: int = Field(default=12, ge=1)
    # A stage's caps: if no sequential test has decided by this many candidate episodes, or
    # this many hours after the stage started, the rollout pauses for a fleet manager.
    max_episodes: int | None = Field(default=240, ge=1)
    max_hours: float | None = Field(default=24.0, gt=0)
    # Heartbeat counts against ingested episodes: a robot's counts may differ by this share
    # of what it reported, or by count_slack episodes, whichever is more, before a stage is
    # held for a fleet manager (services/rollout/counts.py).
    count_tolerance: float = Field(default=0.1, ge=0, lt=1)
    count_slack: int = Field(default=2, ge=0)
    # The chance of rolling back a candidate as good as the champion, for the whole rollout:
    # each of the two sequential tests gets half of it.
    alpha: float = Field(default=0.05, gt=0, lt=1)
    # Each sequential test's miss rate at the degradation it is built to catch.
    beta: float = Field(default=0.2, gt=0, lt=1)
    # The degradation it is built to catch: the failure-rate ratio against the champion...
    worse_ratio: float = Field(default=2.0, gt=1)
    # ...and the absolute increase of the failure rate.
    failure_increase: float = Field(default=0.25, gt=0, lt=1)


# The name of each of Flywheel's images (infra/docker/Dockerfile's targets api, trainer and
# policy-server), by the setting that holds its full reference.
IMAGE_NAMES = {
    "policy_server_image": "flywheel-policy-server",
    "training_image": "flywheel-trainer",
    "flow_image": "flywheel",
}
# A Kubernetes quantity of memory: "512Mi", "8Gi", "1.5G".
KUBE_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
# An image reference with an explicit tag or digest: [registry[:port]/]path:tag[@digest].
_IMAGE = re.compile(
    r"^(?:[a-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def _project_version() -> str:
    """This code's version (pyproject.toml), the tag its images are built with."""
    try:
        return version("flywheel")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0.0.0"


def check_image(reference: str, setting: str) -> str:
    """Refuse an image reference without an explicit tag or digest: "latest" by default would
    run whatever was pushed last, not the code these settings go with."""
    last = reference.rsplit("/", 1)[-1]
    if not _IMAGE.match(reference) or (":" not in last and "@" not in last):
        raise ValueError(
            f"{setting}={reference!r} is not an image reference with a tag or digest "
            "(registry/name:tag, e.g. registry.example.com/flywheel/flywheel-trainer:0.1.0)"
        )
    return reference


class KubeSettings(BaseSettings):
    model_config = _flywheel()

    # When a namespace is set, the rollout controller keeps one policy-server Deployment per
    # robot group on the version its robots run, and the train stage runs as a KubeRay
    # RayJob (services/kube).
    kube_namespace: str | None = None
    # Inside the cluster the pod's service account is used...
    kube_in_cluster: bool = False
    # ...from outside, a kubeconfig...
    kubeconfig: str | None = None
    # ...and its context.
    kube_context: str | None = None
    # Flywheel's images (infra/docker/Dockerfile) are <registry>/<name>:<tag>: the registry
    # they are pushed to (FLYWHEEL_IMAGE_REGISTRY, e.g. "registry.example.com/flywheel");
    # empty: the bare names that `docker build` in infra/README.md tags...
    image_registry: str = ""
    # ...and their tag (FLYWHEEL_IMAGE_TAG); empty: this code's version, as the README
    # builds them.
    image_tag: str = ""
    # Each image in full; unset: <registry>/<name>:<tag> with the name in IMAGE_NAMES. The
    # policy servers' (FLYWHEEL_POLICY_SERVER_IMAGE)...
    policy_server_image: str = ""
    # ...the Ray head's and workers', of the RayCluster and of the training RayJobs
    # (FLYWHEEL_TRAINING_IMAGE)...
    training_image: str = ""
    # ...and the one the Prefect Kubernetes work pool runs the flows in (FLYWHEEL_FLOW_IMAGE).
    flow_image: str = ""
    # The Ray cluster's autoscaling worker group (services/kube/raycluster.py), the same for
    # the long-lived RayCluster and each training RayJob's own: worker pods kept when idle
    # (FLYWHEEL_RAY_MIN_WORKERS)...
    ray_min_workers: int = Field(default=0, ge=0)
    # ...the most the autoscaler adds while work waits for resources...
    ray_max_workers: int = Field(default=4, ge=1)
    # ...each pod's CPUs (request = limit: Ray offers what the pod is sure to get)...
    ray_worker_cpus: int = Field(default=2, ge=1)
    # ...memory (a Kubernetes quantity; request = limit)...
    ray_worker_memory: str = Field(default="8Gi", pattern=KUBE_QUANTITY)
    # ...GPUs (nvidia.com/gpu; the trainer image must then be built with a CUDA torch)...
    ray_worker_gpus: int = Field(default=0, ge=0)
    # ...and how long a worker pod may stay idle before it is removed.
    ray_idle_timeout_s: int = Field(default=60, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _full_image_names(cls, data: Any) -> Any:
        """Fill each unset image from the registry and the tag, then check every reference."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        tag = data.get("image_tag") or _project_version()
        registry = str(data.get("image_registry") or "").rstrip("/")
        for field, name in IMAGE_NAMES.items():
            if not data.get(field):
                data[field] = f"{registry}/{name}:{tag}" if registry else f"{name}:{tag}"
            check_image(data[field], f"FLYWHEEL_{field.upper()}")
        return data

    @model_validator(mode="after")
    def _workers(self) -> KubeSettings:
        if self.ray_max_workers < self.ray_min_workers:
            raise ValueError(
                f"FLYWHEEL_RAY_MAX_WORKERS ({self.ray_max_workers}) is below "
                f"FLYWHEEL_RAY_MIN_WORKERS ({self.ray_min_workers})"
            )
        return self


class LinkSettings(BaseSettings):
    model_config = _flywheel()

    # Base URL of the MLflow UI (e.g. http://mlflow:5000) for links from a candidate's page;
    # unset: no links.
    mlflow_ui_url: str | None = None
    # Base URL of the Prefect UI (e.g. http://prefect:4200); unset: no links.
    prefect_ui_url: str | None = None


def _config_dir() -> Path:
    """The user's configuration folder (XDG: $XDG_CONFIG_HOME, else ~/.config)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


class CliSettings(BaseSettings):
    model_config = _flywheel()

    # The API that the CLI sends people's actions to in production (approve, rollouts,
    # users); default: the API of `flywheel up` and `flywheel serve` on this machine.
    api_url: str | None = None
    # The API token the CLI acts with (FLYWHEEL_TOKEN); it takes precedence over the one
    # `flywheel login` stored. Never recorded.
    token: SecretStr | None = None
    # Where `flywheel login` keeps tokens, one per API URL, readable by the user alone.
    credentials_file: Path = Field(
        default_factory=lambda: _config_dir() / "flywheel" / "credentials"
    )
    # No longer honoured: the CLI acts as the holder of a token, never as a name it is told.
    # Set, a person's action is refused with a message saying so (issue 18).
    user: str | None = None


class NightSettings(BaseSettings):
    model_config = _flywheel()

    # How long a nightly run holds its lease without finishing a stage; a run on another
    # host that stays silent longer is taken for dead and the next trigger takes over.
    night_lease_s: float = Field(default=6 * 3600, gt=0)


class RetentionSettings(BaseSettings):
    model_config = _flywheel("FLYWHEEL_RETENTION_")

    # Days a raw upload (a log in the fleet log store, by its modification time) is kept
    # before `flywheel retention apply` removes it (FLYWHEEL_RETENTION_RAW_DAYS); None keeps
    # them forever.
    raw_days: float | None = Field(default=None, gt=0)
    # Days an ingested episode (by when it was recorded) is kept; None keeps them forever.
    # Episodes the champion's lineage was trained on stay while it is champion
    # (docs/data-retention.md).
    episode_days: float | None = Field(default=None, gt=0)


class VideoSettings(BaseSettings):
    model_config = _flywheel("FLYWHEEL_VIDEO_")

    # How ingest encodes camera tracks, which the episode store packs without re-encoding:
    # H.264 with a keyframe every 2 frames; bench/video_codec.py measures the choices and
    # docs/camera-frames.md says why. An FFmpeg encoder PyAV has: libx264 or libsvtav1 (AV1).
    codec: Literal["libx264", "libsvtav1"] = "libx264"
    # Frames between keyframes: small, so decoding a randomly sampled step stays cheap.
    gop: int = Field(default=2, ge=1)
    # None: the codec's own (18 for H.264, 30 for AV1, where the policy's loss is the raw's).
    crf: int | None = Field(default=None, ge=0, le=63)


class NotifySettings(BaseSettings):
    model_config = _flywheel("FLYWHEEL_NOTIFY_")

    # Where notifications are posted (FLYWHEEL_NOTIFY_WEBHOOK_URL); unset: notifications off.
    # A secret: a Slack incoming-webhook URL lets anyone post to the channel.
    webhook_url: SecretStr | None = None
    # The body's shape: "json" (Flywheel's own) or "slack" (an incoming webhook's text+blocks).
    format: Literal["json", "slack"] = "json"
    # Seconds one POST may take before it counts as a failed attempt.
    timeout_s: float = Field(default=5.0, gt=0)
    # Attempts per notification before it is given up (left "failed" in the outbox).
    max_attempts: int = Field(default=8, ge=1)
    # The wait before the second attempt; it doubles after every failure...
    backoff_s: float = Field(default=2.0, gt=0)
    # ...up to this (8 attempts at 2 s doubling span about 4 minutes).
    backoff_max_s: float = Field(default=120.0, gt=0)
    # How often a background notifier looks for new events (the night's, `notify --follow`).
    poll_s: float = Field(default=10.0, gt=0)
    # An ingest run is a quarantine spike when it quarantines at least this many uploads...
    quarantine_spike: int = Field(default=5, ge=1)
    # ...and at least this share of what it read.
    quarantine_spike_share: float = Field(default=0.2, ge=0, le=1)

    @property
    def enabled(self) -> bool:
        return self.webhook_url is not None and bool(self.webhook_url.get_secret_value())


class MetricsSettings(BaseSettings):
    model_config = _flywheel("FLYWHEEL_METRICS_")

    # How long /metrics serves one snapshot of the store before it queries it again
    # (FLYWHEEL_METRICS_TTL_S): scrapes in between run no SQL. 0 queries on every scrape.
    ttl_s: float = Field(default=15.0, ge=0)


class ApiSettings(BaseSettings):
    model_config = _flywheel("FLYWHEEL_API_")

    # Largest request body the API reads (FLYWHEEL_API_MAX_BODY_BYTES); a larger one is
    # answered 413 before it is read. Heartbeats and forms are well under a kilobyte.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Bad credentials from one client (by IP, and per robot id a credential claims) within
    # the window that lock it out...
    lockout_failures: int = Field(default=10, ge=1)
    # ...the window they are counted in...
    lockout_window_s: float = Field(default=300.0, gt=0)
    # ...and how long the lockout lasts (429 with Retry-After, the credential not checked).
    lockout_s: float = Field(default=300.0, gt=0)
    # Robot requests served at once; None: 1 on SQLite (its one writer, taken in turn
    # rather than fought over), 8 on PostgreSQL (within SQLAlchemy's pool of 5 + 10).
    robot_concurrency: int | None = Field(default=None, ge=1)
    # How long a robot request may wait for its turn before it is answered 503 with
    # Retry-After (the robot retries then); a request is never left waiting for the pool.
    robot_queue_s: float = Field(default=2.0, ge=0)


class PolicyServerSettings(BaseSettings):
    model_config = _flywheel()

    # The version a policy server loads before it reports ready (FLYWHEEL_MODEL_VERSION: the
    # Kubernetes backend sets it to the robot group's version); None: whatever its robots are
    # assigned. Each robot is served its own assignment either way.
    model_version: str | None = None
    # The same model as an MLflow URI (FLYWHEEL_MODEL_URI, set beside the version): when
    # set, it must name the version above in this registry's model.
    model_uri: str | None = None
    # The robot group a server serves (FLYWHEEL_ROBOT_GROUP); None: every enrolled robot.
    robot_group: str | None = None
    # Port of `flywheel policy-server` (websocket and HTTP on one port), in Flywheel's block.
    policy_server_port: int = Field(default=8475, ge=1, le=65535)
    # How often the server reads the fleet's assignments and credentials: a new assignment
    # is served, and a revoked credential's connections closed, within this many seconds.
    policy_server_poll_s: float = Field(default=2.0, gt=0)
    # Inference calls on a newly loaded model before any robot is switched to it.
    policy_server_warmup_calls: int = Field(default=5, ge=1)
    # Threads that run inference; requests beyond them queue. torch runs one thread each.
    policy_server_threads: int = Field(default=2, ge=1)
    # Largest message a robot may send (bytes): observations with camera images fit.
    policy_server_max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)


class Settings(BaseSettings):
    model_config = _flywheel()

    # Root of the embedded installation; every default path below lives under it.
    home: Path = Path(".flywheel")
    # "embedded" runs on one machine; "production" refuses SQLite and placeholder secrets.
    mode: Literal["embedded", "production"] = "embedded"
    # Secret used to sign API tokens; production refuses a placeholder. Never recorded.
    secret_key: SecretStr = SecretStr("dev-secret")
    # The Flywheel store (FLYWHEEL_DATABASE_URL).
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    # MLflow: tracking store and the registered model.
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    # Ray and the ports of the local stack.
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    # The (simulated) fleet: tasks, seeds, where its logs land.
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    # How a night builds its dataset.
    curation: CurationSettings = Field(default_factory=CurationSettings)
    # What a night trains.
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    # How a candidate is evaluated.
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    # Who approves a candidate, and how long a night waits.
    approval: ApprovalSettings = Field(default_factory=ApprovalSettings)
    # The staged rollout and its sequential tests (FLYWHEEL_ROLLOUT_*).
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    # Kubernetes: policy servers and KubeRay training.
    kube: KubeSettings = Field(default_factory=KubeSettings)
    # Links to the MLflow and Prefect UIs.
    links: LinkSettings = Field(default_factory=LinkSettings)
    # The nightly run's lease.
    night: NightSettings = Field(default_factory=NightSettings)
    # Who the CLI acts as: the API it calls and the token it holds.
    cli: CliSettings = Field(default_factory=CliSettings)
    # How long raw uploads and episodes are kept (FLYWHEEL_RETENTION_*).
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    # How camera frames are encoded (FLYWHEEL_VIDEO_CODEC, _GOP, _CRF).
    video: VideoSettings = Field(default_factory=VideoSettings)
    # The webhook told of approvals waiting, verdicts, rollbacks, halts (FLYWHEEL_NOTIFY_*).
    notify: NotifySettings = Field(default_factory=NotifySettings)
    # /metrics' snapshot of the store (FLYWHEEL_METRICS_*).
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    # What the API lets in: body size, credential lockout, robot requests at once.
    api: ApiSettings = Field(default_factory=ApiSettings)
    # `flywheel policy-server`: what it preloads, which robots it serves, its port.
    policy_server: PolicyServerSettings = Field(default_factory=PolicyServerSettings)
    # Shadow runs: where their actions are logged, how they are compared (FLYWHEEL_SHADOW_*).
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)

    @model_validator(mode="after")
    def _field_tasks_are_tasks(self) -> Settings:
        extra = sorted(set(self.evaluation.field_tasks) - set(self.fleet.tasks))
        if extra:
            raise ValueError(
                f"FLYWHEEL_FIELD_TASKS names {extra}, which FLYWHEEL_TASKS does not list"
            )
        return self

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.mode == "production":
            if self.db_url.startswith("sqlite"):
                raise ValueError(
                    "production mode refuses SQLite: set FLYWHEEL_DATABASE_URL to a PostgreSQL URL"
                )
            if self.secret_key.get_secret_value() in PLACEHOLDER_SECRETS:
                raise ValueError("production mode refuses a placeholder FLYWHEEL_SECRET_KEY")
        return self

    def updated(self, **changes: dict[str, Any]) -> Settings:
        """A copy with fields of some groups changed and validated.

        ``settings.updated(rollout={"stages": (1.0,)})``; a root field: ``model_copy``.
        """
        groups = {
            name: type(getattr(self, name))(**{**getattr(self, name).model_dump(), **fields})
            for name, fields in changes.items()
        }
        return self.model_copy(update=groups)

    @cached_property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def approval_wait(self) -> float:
        if self.approval.approval_wait_s is not None:
            return self.approval.approval_wait_s
        return 4 * 3600.0 if self.mode == "production" else 0.0

    @property
    def api_url(self) -> str:
        url = self.cli.api_url or f"http://127.0.0.1:{self.runtime.api_port}"
        return url.rstrip("/")

    @property
    def robot_concurrency(self) -> int:
        if self.api.robot_concurrency is not None:
            return self.api.robot_concurrency
        return 1 if self.db_url.startswith("sqlite") else 8

    @property
    def db_url(self) -> str:
        return self.database.url or f"sqlite:///{self.root / 'flywheel.db'}"

    @property
    def mlflow_uri(self) -> str:
        return self.registry.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def twin_tasks(self) -> list[str]:
        """The fleet's tasks a simulator twin judges (closed loop)."""
        return [t for t in self.fleet.tasks if t not in self.evaluation.field_tasks]

    @property
    def field_tasks(self) -> list[str]:
        """The fleet's tasks judged on field evidence (shadow runs), no twin."""
        return [t for t in self.fleet.tasks if t in self.evaluation.field_tasks]

    @property
    def shadow_log(self) -> Path:
        return self.shadow.log or self.root / "shadow-log"

    @property
    def fleet_log_uri(self) -> str:
        return self.fleet.fleet_logs or str(self.root / "fleet-logs")

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
    """The settings the environment holds now.

    Read afresh whenever a FLYWHEEL_ variable or the working directory (a relative home)
    changed since the last call, else the same frozen object again: tests and the CLI change
    the environment, and reading it takes milliseconds, which the API paid on every request.
    """
    names = sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("FLYWHEEL_"))
    return _settings_of((os.getcwd(), tuple(names)))


@lru_cache(maxsize=8)
def _settings_of(_environment: tuple) -> Settings:
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
