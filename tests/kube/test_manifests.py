"""Generated manifests pass the Kubernetes and KubeRay schemas; broken ones fail with a path."""

from __future__ import annotations

import copy

import pytest

from services.kube import manifests as m
from services.kube.validation import ManifestError, validate_all, validate_manifest
from tests.kube.apiserver import strategic_merge

CONFIG = m.PolicyServerConfig(image="registry.example/policy-server:1.0", args=("--workers", "2"))


def test_every_generated_manifest_is_valid():
    validate_all(
        [
            m.policy_server_deployment("canary", "7", "models:/p/7", CONFIG, namespace="flywheel"),
            m.policy_server_service("canary", CONFIG, namespace="flywheel"),
        ]
    )


def test_an_unknown_field_is_an_error_not_dropped():
    deployment = m.policy_server_deployment("canary", "7", "models:/p/7", CONFIG, namespace="fw")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicty"] = "Always"
    with pytest.raises(
        ManifestError, match=r"spec\.template\.spec\.containers\.0.*imagePullPolicty"
    ):
        validate_manifest(deployment)


def test_a_wrong_type_names_its_path():
    service = m.policy_server_service("canary", CONFIG, namespace="fw")
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(
        ManifestError, match=r"(?s)Service/policy-server-canary.*spec\.ports\.0\.port"
    ):
        validate_manifest(service)


def test_unknown_kinds_and_versions_are_refused():
    with pytest.raises(ManifestError, match="no schema for Gadget"):
        validate_manifest({"apiVersion": "apps/v1", "kind": "Gadget", "metadata": {"name": "g"}})
    with pytest.raises(ManifestError, match="no bundled Kubernetes schemas for version 1.2"):
        validate_manifest(m.policy_server_service("a", CONFIG, namespace="fw"), version="1.2")
    with pytest.raises(ManifestError, match="without metadata.name"):
        validate_manifest({"apiVersion": "v1", "kind": "Service", "metadata": {}})


def test_duplicate_objects_are_refused():
    service = m.policy_server_service("a", CONFIG, namespace="fw")
    with pytest.raises(ManifestError, match="Service/policy-server-a is defined twice"):
        validate_all([service, copy.deepcopy(service)])


def test_the_version_patch_lands_where_a_fresh_manifest_would():
    old = m.policy_server_deployment("canary", "7", "models:/p/7", CONFIG, namespace="fw")
    fresh = m.policy_server_deployment("canary", "8", "models:/p/8", CONFIG, namespace="fw")

    patched = strategic_merge(old, m.version_patch("canary", "8", "models:/p/8"), "Deployment")

    assert patched == fresh


@pytest.mark.parametrize("group", ["Canary", "1st", "a_b", "-x", "x-", "", "g" * 50])
def test_group_names_that_cannot_name_objects_are_refused(group):
    with pytest.raises(ValueError, match="must be a DNS label"):
        m.policy_server_name(group)


def test_policy_server_config_refuses_nonsense():
    with pytest.raises(ValueError, match="image is empty"):
        m.PolicyServerConfig(image="")
    with pytest.raises(ValueError, match="not a TCP port"):
        m.PolicyServerConfig(image="i", port=70000)
    with pytest.raises(ValueError, match="must start with '/'"):
        m.PolicyServerConfig(image="i", health_path="health")


def test_a_policy_server_pod_gets_what_flywheel_policy_server_reads():
    """The image runs `flywheel policy-server --host 0.0.0.0 --port 8080` (its CMD); the pod
    gives it the store, the registry, the secret key production refuses to run without, a
    writable home for the model cache, and its group's model."""
    from pathlib import Path

    config = m.PolicyServerConfig(image="registry.example/policy-server:1.0")
    deployment = m.policy_server_deployment("dock-2", "7", "models:/p/7", config, namespace="f")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert container["envFrom"] == [{"configMapRef": {"name": "flywheel-config"}}]
    assert "$(DB_PASSWORD)@postgres" in env["FLYWHEEL_DATABASE_URL"]["value"]
    assert env["FLYWHEEL_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "flywheel-app"
    assert {e["value"] for n, e in env.items() if n.startswith("FLYWHEEL_") and "value" in e} >= {
        "7",
        "models:/p/7",
        "dock-2",
    }
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == env["FLYWHEEL_HOME"]["value"]
    assert mount["name"] in {v["name"] for v in pod["volumes"]}
    dockerfile = (Path(__file__).parents[2] / "infra" / "docker" / "Dockerfile").read_text()
    policy_stage = dockerfile.split("AS policy-server", 1)[1]
    assert f'"--port", "{config.port}"' in policy_stage and '"policy-server"' in policy_stage
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
