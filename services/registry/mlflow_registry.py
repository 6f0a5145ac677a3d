"""MLflow: candidates as registered model versions with lineage tags, and the champion alias.

Each candidate is one MLflow run (parameters, the loss curve, the manifest and the checkpoint
as artifacts) and one version of the registered model, logged as a pyfunc so that any MLflow
tool can serve it. The version's tags carry its lineage: candidate id, dataset hash, parent
version, code version and the Prefect flow run that produced it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from policies.checkpoint import checkpoint_checksum, load_checkpoint
from services.config import Settings

EXPERIMENT = "flywheel"
# The model version's tag holding its checkpoint's checksum (policies/checkpoint.py).
CHECKSUM_TAG = "checkpoint_checksum"
CHAMPION_ALIAS = "champion"
# What serving a Flywheel policy needs; given explicitly because inferring it takes minutes.
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "pandas", "mlflow"]


@dataclass(frozen=True)
class RegisteredModel:
    version: str
    run_id: str


def _client(settings: Settings):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_uri)
    return MlflowClient(settings.mlflow_uri)


def _experiment_id(settings: Settings, client) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    local = settings.mlflow_uri.startswith("sqlite") or "://" not in settings.mlflow_uri
    location = settings.mlflow_artifacts.as_uri() if local else None
    return client.create_experiment(EXPERIMENT, artifact_location=location)


def find_candidate_version(settings: Settings, candidate_id: str) -> RegisteredModel | None:
    client = _client(settings)
    versions = client.search_model_versions(
        f"name = '{settings.registry.model_name}' and tags.candidate_id = '{candidate_id}'"
    )
    if not versions:
        return None
    first = min(versions, key=lambda v: int(v.version))
    return RegisteredModel(version=str(first.version), run_id=first.run_id)


def register_candidate(
    settings: Settings,
    *,
    checkpoint_dir: Path,
    candidate_id: str,
    dataset_id: str,
    parent_version: str | None,
    flow_run_id: str | None,
    code_version: str,
    params: dict,
    losses: list[tuple[int, float]],
    manifest_path: Path | None,
) -> RegisteredModel:
    """Log and register a candidate; returns the existing version if it was registered before."""
    import mlflow
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    from services.registry import pyfunc

    existing = find_candidate_version(settings, candidate_id)
    if existing is not None:
        return existing
    client = _client(settings)
    experiment_id = _experiment_id(settings, client)
    # A registration killed after its run opened, before the version was created, left the
    # run behind: it is deleted, so that the candidate ends with one run, the registered one.
    for stale in client.search_runs([experiment_id], f"tags.candidate_id = '{candidate_id}'"):
        client.delete_run(stale.info.run_id)
    lineage = {
        "candidate_id": candidate_id,
        "dataset_id": dataset_id,
        "parent_version": parent_version or "",
        "code_version": code_version,
        "flow_run_id": flow_run_id or "",
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"candidate-{candidate_id}", tags=lineage
    ) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        now_ms = int(time.time() * 1000)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("train_loss", loss, now_ms, step) for step, loss in losses],
        )
        if manifest_path is not None and manifest_path.exists():
            mlflow.log_artifact(str(manifest_path), artifact_path="dataset")
        policy = load_checkpoint(checkpoint_dir)  # its inputs: the signature and an example
        with tempfile.TemporaryDirectory() as staging:
            # Logged artifacts keep their folder's name: stage it as "checkpoint".
            staged = shutil.copytree(checkpoint_dir, Path(staging) / "checkpoint")
            info = mlflow.pyfunc.log_model(
                name="policy",
                python_model=pyfunc.__file__,
                artifacts={"checkpoint": str(staged)},
                pip_requirements=PIP_REQUIREMENTS,
                signature=pyfunc.signature(policy),
                input_example=pyfunc.input_example(policy),
            )
    # Registered through the client so the lineage tags arrive with the version, in one call.
    try:
        client.create_registered_model(settings.registry.model_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The checkpoint's checksum goes with the version: whoever downloads it (a policy server,
    # a robot) checks the files it got against what was registered.
    created = client.create_model_version(
        settings.registry.model_name,
        source=info.model_uri,
        run_id=run.info.run_id,
        tags=lineage | {CHECKSUM_TAG: checkpoint_checksum(checkpoint_dir)},
        model_id=info.model_id,
    )
    version = str(created.version)
    return RegisteredModel(version=version, run_id=run.info.run_id)


def model_version_tags(settings: Settings, version: str) -> dict[str, str]:
    return dict(_client(settings).get_model_version(settings.registry.model_name, version).tags)


def recorded_checksum(settings: Settings, version: str) -> str | None:
    """The checksum registered with a version; None for one registered before it was kept."""
    return model_version_tags(settings, version).get(CHECKSUM_TAG)


def champion_version(settings: Settings) -> str | None:
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    try:
        return str(
            client.get_model_version_by_alias(settings.registry.model_name, CHAMPION_ALIAS).version
        )
    except MlflowException:  # no registered model, or no alias yet
        return None


def set_champion(settings: Settings, version: str) -> None:
    _client(settings).set_registered_model_alias(
        settings.registry.model_name, CHAMPION_ALIAS, version
    )


def policy_checkpoint(settings: Settings, version: str) -> Path:
    """The checkpoint folder of a model version, downloaded once into FLYWHEEL_HOME."""
    import mlflow

    cache_dir = settings.root / "model-cache" / settings.registry.model_name / version
    checkpoint = cache_dir / "artifacts" / "checkpoint"
    if not checkpoint.exists():
        _client(settings)
        tmp = cache_dir.with_name(f".{version}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{settings.registry.model_name}/{version}", dst_path=str(tmp)
        )
        shutil.rmtree(cache_dir, ignore_errors=True)
        tmp.rename(cache_dir)
    return checkpoint


def load_policy(settings: Settings, version: str):
    """The LoadedPolicy of a model version (cached per process: versions never change)."""
    return _load_policy(str(policy_checkpoint(settings, version)))


@cache
def _load_policy(path: str):
    return load_checkpoint(Path(path))


def code_version() -> str:
    """The commit of the code that trains; the package version outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return f"flywheel-{version('flywheel')}"
