"""The train stage as a KubeRay RayJob, against the stand-in API server (the test plays the
KubeRay operator and the job itself; no Kubernetes API server runs here)."""

import os

import pytest
from kubernetes import client

from services.config import Settings
from services.kube.raycluster import CANDIDATE_ANNOTATION, training_job_name
from services.training.config import TrainConfig
from services.training.kube_job import train_on_kubernetes
from services.training.ray_job import TrainingJobFailed
from tests.conftest import add_candidate
from tests.kube.conftest import NAMESPACE


def _operator(api_client):
    custom = client.CustomObjectsApi(api_client)

    def writes(name: str, status: dict) -> None:
        custom.patch_namespaced_custom_object_status(
            "ray.io",
            "v1",
            NAMESPACE,
            "rayjobs",
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    return writes


def _job(apiserver) -> dict:
    [job] = [o for (plural, *_), o in apiserver.objects.items() if plural == "rayjobs"]
    return job


def test_the_train_stage_waits_for_its_rayjob_and_finds_the_registered_candidate(
    settings, backend, api_client, apiserver
):
    operator, looks = _operator(api_client), []

    def meanwhile(seconds: float) -> None:  # what KubeRay and the job do between two polls
        looks.append(seconds)
        name = _job(apiserver)["metadata"]["name"]
        if len(looks) == 1:
            operator(name, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
        else:
            candidate_id = _job(apiserver)["metadata"]["annotations"][CANDIDATE_ANNOTATION]
            add_candidate(settings.db_url, candidate_id, version="1", status="registered")
            operator(name, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"})

    candidate_id = train_on_kubernetes(settings, "d1", backend=backend, poll_s=5, sleep=meanwhile)
    assert looks == [5, 5]
    job = _job(apiserver)
    assert job["metadata"]["name"] == training_job_name(candidate_id)
    assert "flywheel train --dataset d1 --resume" in job["spec"]["entrypoint"]
    # a re-run night finds the finished job instead of starting another
    assert train_on_kubernetes(settings, "d1", backend=backend, sleep=meanwhile) == candidate_id
    assert looks == [5, 5]


def test_a_failed_or_empty_rayjob_fails_the_stage_with_the_operators_message(
    settings, backend, api_client, apiserver
):
    operator = _operator(api_client)

    def fails(seconds: float) -> None:
        name = _job(apiserver)["metadata"]["name"]
        operator(
            name, {"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "message": "OOMKilled"}
        )

    with pytest.raises(TrainingJobFailed, match="Complete/FAILED: OOMKilled"):
        train_on_kubernetes(settings, "d1", backend=backend, sleep=fails)
    operator(_job(apiserver)["metadata"]["name"], {"jobStatus": "SUCCEEDED", "message": ""})
    with pytest.raises(TrainingJobFailed, match="registered no candidate"):
        train_on_kubernetes(settings, "d1", backend=backend, sleep=fails)


def test_the_rayjob_trains_what_the_nights_settings_ask_for(
    settings, backend, api_client, apiserver, monkeypatch
):
    """A vision night's cameras, image size and augmentation reach the RayJob's `flywheel
    train`, which reads its settings from its pods' environment: the job trains the same
    config, so the candidate it registers is the one the stage waits for."""
    monkeypatch.setenv("FLYWHEEL_TRAIN_CAMERAS", '["front", "wrist"]')
    monkeypatch.setenv("FLYWHEEL_TRAIN_IMAGE_PX", "48")
    monkeypatch.setenv("FLYWHEEL_TRAIN_AUGMENT_SHIFT", "3")
    night = Settings()
    operator = _operator(api_client)

    def meanwhile(seconds: float) -> None:
        job = _job(apiserver)
        candidate_id = job["metadata"]["annotations"][CANDIDATE_ANNOTATION]
        add_candidate(settings.db_url, candidate_id, version="1", status="registered")
        operator(
            job["metadata"]["name"], {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
        )

    train_on_kubernetes(night, "d1", backend=backend, sleep=meanwhile)
    [container] = _job(apiserver)["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"][
        "containers"
    ]
    for name in [k for k in list(os.environ) if k.startswith("FLYWHEEL_TRAIN_")]:
        monkeypatch.delenv(name)
    for variable in container["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    in_the_job = TrainConfig.from_settings(Settings().training, resume=True)
    assert in_the_job == TrainConfig.from_settings(night.training, resume=True)
    assert (in_the_job.cameras, in_the_job.image_px, in_the_job.augment_shift) == (
        ("front", "wrist"),
        48,
        3,
    )
