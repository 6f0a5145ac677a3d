"""The Ray cluster of a night and the training RayJobs: an autoscaling worker group shaped by
the settings, checked against KubeRay's schema; broken ones are refused with their path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.config import KubeSettings
from services.kube import raycluster as ray
from services.kube.manifests import DNS_LABEL
from services.kube.validation import ManifestError, validate_all, validate_manifest

BASE_RAYCLUSTER = Path(__file__).resolve().parents[2] / "infra" / "base" / "raycluster.yaml"
# How infra/base wires the Ray pods: the settings ConfigMap and the object store's keys.
BASE_ENV_FROM = [{"configMapRef": {"name": "flywheel-config"}}]
BASE_ENV = [
    {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": "flywheel-object-store", "key": key}},
    }
    for name, key in (
        ("AWS_ACCESS_KEY_ID", "access-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "secret-access-key"),
    )
]


def rayjob(**kwargs) -> dict:
    kwargs.setdefault("shape", ray.RayClusterShape(min_workers=1, max_workers=3))
    return ray.training_rayjob(
        "cand-1",
        image="registry.example/flywheel-trainer:1",
        entrypoint="flywheel train --dataset d1",
        namespace="flywheel",
        **kwargs,
    )


def cluster(shape: ray.RayClusterShape | None = None) -> dict:
    return ray.ray_cluster(
        "flywheel-ray",
        image="registry.example/flywheel-trainer:1",
        shape=shape or ray.RayClusterShape(),
        namespace="flywheel",
    )


def test_every_ray_manifest_is_valid():
    validate_all([cluster(), rayjob(runtime_env={"env_vars": {"A": "1"}}, active_deadline_s=3600)])


def test_the_worker_group_autoscales_as_the_settings_say(monkeypatch):
    for key, value in {
        "FLYWHEEL_RAY_MIN_WORKERS": "1",
        "FLYWHEEL_RAY_MAX_WORKERS": "6",
        "FLYWHEEL_RAY_WORKER_CPUS": "4",
        "FLYWHEEL_RAY_WORKER_MEMORY": "16Gi",
        "FLYWHEEL_RAY_WORKER_GPUS": "1",
        "FLYWHEEL_RAY_IDLE_TIMEOUT_S": "300",
    }.items():
        monkeypatch.setenv(key, value)
    shape = ray.RayClusterShape.from_settings(KubeSettings())
    for spec in (cluster(shape)["spec"], rayjob(shape=shape)["spec"]["rayClusterSpec"]):
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 300
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        (group,) = spec["workerGroupSpecs"]
        assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (1, 1, 6)
        (worker,) = group["template"]["spec"]["containers"]
        limits = worker["resources"]["limits"]
        assert limits == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
        assert worker["resources"]["requests"]["cpu"] == "4"
    validate_all([cluster(shape), rayjob(shape=shape)])


def test_a_shape_that_cannot_scale_is_refused():
    with pytest.raises(ValueError, match=r"max_workers \(2\) must be at least .*\(3\)"):
        ray.RayClusterShape(min_workers=3, max_workers=2)
    with pytest.raises(ValidationError, match="FLYWHEEL_RAY_MAX_WORKERS"):
        KubeSettings(ray_min_workers=3, ray_max_workers=2)
    with pytest.raises(ValidationError, match="ray_worker_memory"):
        KubeSettings(ray_worker_memory="a lot")


def test_an_invalid_raycluster_is_refused_with_its_path():
    good = cluster()
    broken = copy.deepcopy(good)
    broken["spec"]["workerGroupSpecs"][0]["maxReplicas"] = -1
    with pytest.raises(
        ManifestError, match=r"(?s)RayCluster/flywheel-ray.*workerGroupSpecs\.0\.maxReplicas"
    ):
        validate_manifest(broken)

    broken = copy.deepcopy(good)
    broken["spec"]["enableInTreeAutoscaling"] = "yes"
    with pytest.raises(ManifestError, match=r"spec\.enableInTreeAutoscaling"):
        validate_manifest(broken)

    broken = copy.deepcopy(good)
    broken["spec"]["autoscalerOptions"]["idleTimeout"] = 60  # misspelt: refused, not dropped
    with pytest.raises(ManifestError, match=r"spec\.autoscalerOptions.*idleTimeout"):
        validate_manifest(broken)


def test_the_base_raycluster_is_the_one_the_default_settings_build():
    """infra/base/raycluster.yaml is not written by hand: on a mismatch, paste the YAML below."""
    wanted = ray.ray_cluster(
        "flywheel-ray",
        image="flywheel-trainer",  # kustomize's images: give it the registry and tag
        shape=ray.RayClusterShape.from_settings(KubeSettings()),
        env=BASE_ENV,
        env_from=BASE_ENV_FROM,
    )
    assert yaml.safe_load(BASE_RAYCLUSTER.read_text()) == wanted, yaml.safe_dump(
        wanted, sort_keys=False
    )


def test_rayjob_schema_checks_the_kuberay_fields():
    job = rayjob()
    broken = copy.deepcopy(job)
    del broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"]
    with pytest.raises(ManifestError, match="maxReplicas"):
        validate_manifest(broken)

    broken = copy.deepcopy(job)
    broken["spec"]["submissionMode"] = "SubmitPlease"
    with pytest.raises(ManifestError, match="submissionMode"):
        validate_manifest(broken)

    broken = copy.deepcopy(job)
    broken["spec"]["clusterSelector"] = {"ray.io/cluster": "shared"}
    with pytest.raises(ManifestError, match="spec"):
        validate_manifest(broken)  # its own cluster or a selected one, not both


def test_rayjob_pod_templates_are_checked_as_kubernetes_pods():
    job = rayjob()
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"]["requests"]["cpu"] = ["1"]
    with pytest.raises(ManifestError, match=r"headGroupSpec\.template\.spec\.containers\.0"):
        validate_manifest(job)


def test_training_job_names_are_stable_short_and_distinct():
    assert ray.training_job_name("cand-42") == "train-cand-42"
    assert ray.training_job_name("Cand_42") == "train-cand-42"
    long_a, long_b = "x" * 80 + "a", "x" * 80 + "b"
    names = {ray.training_job_name(long_a), ray.training_job_name(long_b)}
    assert len(names) == 2
    assert all(len(n) <= ray.MAX_RAYJOB_NAME and DNS_LABEL.match(n) for n in names)
    assert ray.training_job_name(long_a) == ray.training_job_name(long_a)
    assert DNS_LABEL.match(ray.training_job_name("###"))
