"""Training as a KubeRay RayJob, when Flywheel runs on Kubernetes.

The nightly flow's train stage submits the candidate's RayJob (named after the candidate id,
so a re-run night finds the job it started instead of starting another) running
``flywheel train --dataset ID --resume`` in the Flywheel image; the job trains on its own
Ray cluster and registers the candidate in the shared store and MLflow, exactly as a local
run does. The flow polls the job until KubeRay reports it finished.

No Kubernetes API server runs on the development machine: this is tested against the
stand-in server in tests/kube, with the test playing the KubeRay operator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from services.config import Settings
from services.registry.candidates import candidate_id_for
from services.registry.ledger import champion_of
from services.registry.mlflow_registry import code_version
from services.store import session_scope
from services.store.models import Candidate
from services.training.config import TrainConfig
from services.training.ray_job import TrainingJobFailed
from services.training.scaling import check_scaling, scaling_env


def train_on_kubernetes(
    settings: Settings,
    dataset_id: str,
    *,
    backend,
    poll_s: float = 30.0,
    timeout_s: float = 6 * 3600,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Run the candidate's training as a RayJob on ``backend`` (the cluster's
    services.kube.backend.KubernetesBackend) and wait for it; returns the candidate id."""
    with session_scope(settings.db_url) as session:
        parent = champion_of(session=session)
    config = TrainConfig.from_settings(settings.training, resume=True)
    candidate_id = candidate_id_for(dataset_id, parent, config.identity(), code_version())
    check_scaling(settings, config.batch_size)
    status = backend.submit_training_job(
        candidate_id,
        settings.kube.training_image,
        f"flywheel train --dataset {dataset_id} --resume",
        # auto: `flywheel train` in the RayJob trains on that job's own cluster, in process.
        env={
            "FLYWHEEL_TRAIN_STEPS": str(settings.training.train_steps),
            "FLYWHEEL_TRAIN_CAMERAS": json.dumps(list(config.cameras)),
            "FLYWHEEL_TRAIN_IMAGE_PX": str(config.image_px),
            "FLYWHEEL_TRAIN_AUGMENT_SHIFT": str(config.augment_shift),
            "FLYWHEEL_TRAIN_LOADER_WORKERS": str(config.loader_workers),
            "FLYWHEEL_RAY_ADDRESS": "auto",
            **scaling_env(settings.training),
        },
    )
    deadline = time.monotonic() + timeout_s
    while not status.finished:
        if time.monotonic() > deadline:
            raise TrainingJobFailed(f"RayJob {status.name} did not finish in {timeout_s:.0f} s")
        sleep(poll_s)
        status = backend.job_status(status.name)
    if not status.succeeded:
        raise TrainingJobFailed(
            f"RayJob {status.name} ended {status.deployment_status}/{status.job_status}: "
            f"{status.message or 'no message'}"
        )
    with session_scope(settings.db_url) as session:
        candidate = session.get(Candidate, candidate_id)
        if candidate is None or candidate.model_version is None:
            raise TrainingJobFailed(
                f"RayJob {status.name} succeeded but registered no candidate {candidate_id}: "
                "does the job use the same FLYWHEEL_DATABASE_URL?"
            )
    return candidate_id
