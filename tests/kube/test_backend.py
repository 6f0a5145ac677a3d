"""The Kubernetes backend through the official client, against the stand-in API server."""

from __future__ import annotations

import pytest
import yaml
from kubernetes import client

from services.kube.backend import JobConflictError, KubeError, KubernetesBackend
from services.kube.manifests import (
    CONTAINER,
    URI_ENV,
    VERSION_ENV,
    PolicyServerConfig,
)
from services.kube.raycluster import training_job_name
from tests.kube.conftest import NAMESPACE

DEPLOYMENTS = "deployments"


def env_of(obj: dict) -> dict[str, str]:
    (container,) = [
        c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == CONTAINER
    ]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_apply_creates_a_policy_server_per_group(backend, apiserver):
    state = backend.apply_policy_server("canary", "7", "models:/flywheel-policy/7")

    assert (state.group, state.version, state.model_uri) == (
        "canary",
        "7",
        "models:/flywheel-policy/7",
    )
    deployment = apiserver.get(DEPLOYMENTS, NAMESPACE, "policy-server-canary")
    assert env_of(deployment)[VERSION_ENV] == "7"
    assert env_of(deployment)[URI_ENV] == "models:/flywheel-policy/7"
    service = apiserver.get("services", NAMESPACE, "policy-server-canary")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert backend.current_versions() == {"canary": "7"}


def test_apply_again_changes_nothing(backend, apiserver):
    backend.apply_policy_server("canary", "7", "models:/p/7")
    before = apiserver.get(DEPLOYMENTS, NAMESPACE, "policy-server-canary")["metadata"]

    backend.apply_policy_server("canary", "7", "models:/p/7")

    after = apiserver.get(DEPLOYMENTS, NAMESPACE, "policy-server-canary")["metadata"]
    assert after["resourceVersion"] == before["resourceVersion"]
    assert after["generation"] == 1


def test_apply_over_an_existing_group_moves_its_version(backend, apiserver):
    backend.apply_policy_server("canary", "7", "models:/p/7")
    state = backend.apply_policy_server("canary", "8", "models:/p/8")

    assert state.version == "8"
    deployment = apiserver.get(DEPLOYMENTS, NAMESPACE, "policy-server-canary")
    assert env_of(deployment)[VERSION_ENV] == "8"
    assert deployment["metadata"]["generation"] == 2


def test_set_group_version_patches_only_the_model(backend, apiserver, api_client):
    backend.apply_policy_server("canary", "7", "models:/p/7")
    # Someone else added a sidecar and an env var: a version change must keep both.
    client.AppsV1Api(api_client).patch_namespaced_deployment(
        "policy-server-canary",
        NAMESPACE,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": CONTAINER, "env": [{"name": "LOG_LEVEL", "value": "debug"}]},
                            {"name": "metrics", "image": "registry.example/exporter:2"},
                        ]
                    }
                }
            }
        },
        _content_type="application/strategic-merge-patch+json",
    )

    state = backend.set_group_version("canary", "8", "models:/p/8")

    assert state.version == "8"
    deployment = apiserver.get(DEPLOYMENTS, NAMESPACE, "policy-server-canary")
    env = env_of(deployment)
    assert env[VERSION_ENV] == "8" and env[URI_ENV] == "models:/p/8"
    assert env["LOG_LEVEL"] == "debug"
    names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert names == [CONTAINER, "metrics"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in container["env"]].count(VERSION_ENV) == 1


def test_setting_the_same_version_twice_rolls_nothing(backend, apiserver):
    backend.apply_policy_server("canary", "7", "models:/p/7")
    backend.set_group_version("canary", "8", "models:/p/8")
    generation = apiserver.get(DEPLOYMENTS, NAMESPACE, "policy-server-canary")["metadata"][
        "generation"
    ]

    backend.set_group_version("canary", "8", "models:/p/8")

    deployment = apiserver.get(DEPLOYMENTS, NAMESPACE, "policy-server-canary")
    assert deployment["metadata"]["generation"] == generation


def test_a_version_is_live_only_once_every_replica_runs_it(backend, apiserver):
    backend.apply_policy_server("canary", "7", "models:/p/7")
    apiserver.settle(NAMESPACE, "policy-server-canary")
    assert backend.group_state("canary").rolled_out

    assert not backend.set_group_version("canary", "8", "models:/p/8").rolled_out
    apiserver.settle(NAMESPACE, "policy-server-canary", available=1)
    assert not backend.group_state("canary").rolled_out
    apiserver.settle(NAMESPACE, "policy-server-canary")
    assert backend.group_state("canary").rolled_out


def test_current_versions_lists_only_policy_servers(backend, api_client):
    backend.apply_policy_server("canary", "8", "models:/p/8")
    backend.apply_policy_server("fleet-rest", "7", "models:/p/7")
    client.AppsV1Api(api_client).create_namespaced_deployment(
        NAMESPACE,
        client.V1Deployment.from_dict(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "unrelated", "labels": {"app": "other"}},
                "spec": {
                    "selector": {"matchLabels": {"app": "other"}},
                    "template": {
                        "metadata": {"labels": {"app": "other"}},
                        "spec": {"containers": [{"name": "x", "image": "nginx:1.27"}]},
                    },
                },
            }
        ),
    )

    assert backend.current_versions() == {"canary": "8", "fleet-rest": "7"}


def test_unknown_group_is_a_clear_error(backend):
    with pytest.raises(KubeError, match="policy-server-ghost.*not found"):
        backend.set_group_version("ghost", "8", "models:/p/8")


def test_bad_input_is_refused_before_any_request(backend, apiserver):
    with pytest.raises(ValueError, match="robot group"):
        backend.apply_policy_server("Canary_1", "8", "models:/p/8")
    with pytest.raises(ValueError, match="model version is empty"):
        backend.set_group_version("canary", " ", "models:/p/8")
    with pytest.raises(ValueError, match="entrypoint is empty"):
        backend.submit_training_job("c1", "registry.example/flywheel:1", "")
    assert apiserver.requests == []


def test_a_missing_namespace_is_reported(api_client):
    backend = KubernetesBackend(api_client, namespace="elsewhere")
    with pytest.raises(
        KubeError, match='create RayJob elsewhere/train-c1: HTTP 404 namespaces "elsewhere"'
    ):
        backend.submit_training_job("c1", "registry.example/flywheel:1", "python -m train")


def test_training_job_is_submitted_once(backend, apiserver):
    first = backend.submit_training_job(
        "cand-42", "registry.example/flywheel:1", "flywheel train --dataset d1"
    )
    again = backend.submit_training_job(
        "cand-42", "registry.example/flywheel:1", "flywheel train --dataset d1"
    )

    assert first == again
    assert first.name == "train-cand-42" and first.candidate_id == "cand-42"
    assert not first.finished
    posts = [r for r in apiserver.requests if r[0] == "POST"]
    assert len(posts) == 2  # the second answered 409 and read the job back
    job = apiserver.get("rayjobs", NAMESPACE, "train-cand-42")
    assert job["spec"]["entrypoint"] == "flywheel train --dataset d1"
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_resubmitting_a_candidate_with_another_spec_is_refused(backend):
    backend.submit_training_job(
        "cand-42", "registry.example/flywheel:1", "flywheel train --dataset d1"
    )
    with pytest.raises(JobConflictError, match="train-cand-42.*another spec"):
        backend.submit_training_job(
            "cand-42", "registry.example/flywheel:1", "flywheel train --dataset d2"
        )


def test_job_status_follows_the_operator(backend, api_client):
    name = backend.submit_training_job(
        "cand-42", "registry.example/flywheel:1", "flywheel train --dataset d1"
    ).name
    custom = client.CustomObjectsApi(api_client)

    def operator_writes(status: dict) -> None:
        custom.patch_namespaced_custom_object_status(
            "ray.io",
            "v1",
            NAMESPACE,
            "rayjobs",
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )

    operator_writes({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
    running = backend.job_status(name)
    assert (running.deployment_status, running.job_status) == ("Running", "RUNNING")
    assert not running.finished

    operator_writes({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "message": "OOM"})
    failed = backend.job_status(name)
    assert failed.finished and not failed.succeeded and failed.message == "OOM"

    operator_writes({"jobStatus": "SUCCEEDED", "message": ""})
    assert backend.job_status(name).succeeded


def test_status_of_an_unknown_job_is_a_clear_error(backend):
    with pytest.raises(KubeError, match="read RayJob flywheel/train-nope: not found"):
        backend.job_status(training_job_name("nope"))


def test_connect_reads_a_kubeconfig(apiserver, tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stand-in", "cluster": {"server": apiserver.url}}],
                "users": [{"name": "ci", "user": {"token": "not-checked"}}],
                "contexts": [{"name": "ci", "context": {"cluster": "stand-in", "user": "ci"}}],
                "current-context": "ci",
            }
        )
    )
    backend = KubernetesBackend.connect(
        namespace=NAMESPACE,
        policy_server=PolicyServerConfig(image="registry.example/policy-server:1.0"),
        kubeconfig=str(kubeconfig),
        context="ci",
    )

    backend.apply_policy_server("canary", "7", "models:/p/7")

    assert backend.current_versions() == {"canary": "7"}
