"""The Kubernetes objects Flywheel writes at run time, built as plain dicts.

- A policy server per robot group: a Deployment and a Service named ``policy-server-<group>``.
  Robots of the group ask it for actions; the model it serves is the group's assignment, held
  in three places that always move together: the ``FLYWHEEL_MODEL_VERSION`` and
  ``FLYWHEEL_MODEL_URI`` environment variables of its container (what the server loads) and
  the ``flywheel.dev/model-version`` annotation of the Deployment and its pod template (what
  Flywheel reads back; changing the template also rolls the pods). Its container also gets
  what ``flywheel policy-server`` reads from the store and the registry (``STORE_ENV``).

Ray's objects (the RayCluster and the training RayJobs) are built in ``raycluster.py``. Every
builder returns a manifest that ``validation.validate_manifest`` accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PART_OF = "flywheel"
GROUP_LABEL = "flywheel.dev/robot-group"
VERSION_ANNOTATION = "flywheel.dev/model-version"
URI_ANNOTATION = "flywheel.dev/model-uri"
POLICY_SERVER_COMPONENT = "policy-server"
CONTAINER = "policy-server"
VERSION_ENV = "FLYWHEEL_MODEL_VERSION"
URI_ENV = "FLYWHEEL_MODEL_URI"
GROUP_ENV = "FLYWHEEL_ROBOT_GROUP"

POLICY_SERVER_PREFIX = "policy-server-"
# Service names are DNS-1035 labels of at most 63 characters.
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_GROUP_LEN = 63 - len(POLICY_SERVER_PREFIX)


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one container (Kubernetes quantities: "500m", "2Gi")."""

    cpu: str = "500m"
    memory: str = "1Gi"
    # Memory limit = request: a policy server that outgrows it is restarted, not the node.
    cpu_limit: str | None = "2"
    gpu: int = 0

    def manifest(self) -> dict:
        requests = {"cpu": self.cpu, "memory": self.memory}
        limits = {"memory": self.memory}
        if self.cpu_limit:
            limits["cpu"] = self.cpu_limit
        if self.gpu:
            requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(self.gpu)
        return {"requests": requests, "limits": limits}


@dataclass(frozen=True)
class PolicyServerConfig:
    """How every group's policy server runs; only the model differs between groups."""

    # Image of the inference server; it reads FLYWHEEL_MODEL_URI and serves HTTP on `port`.
    # It must run as a non-root user: the pod refuses root (runAsNonRoot).
    image: str
    # Arguments to the image's entrypoint; empty runs the image's default command.
    args: tuple[str, ...] = ()
    port: int = 8080
    # Liveness and readiness path; the server answers 200 once the model is loaded.
    health_path: str = "/health"
    replicas: int = 2
    resources: Resources = field(default_factory=Resources)
    service_account: str | None = None
    image_pull_policy: str = "IfNotPresent"

    def __post_init__(self) -> None:
        if not self.image:
            raise ValueError("policy server image is empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"policy server port {self.port} is not a TCP port")
        if self.replicas < 0:
            raise ValueError("policy server replicas must be >= 0")
        if not self.health_path.startswith("/"):
            raise ValueError(f"health path {self.health_path!r} must start with '/'")


def check_group(group: str) -> str:
    """Refuse a group name that cannot name a Deployment and Service (no silent renaming)."""
    if not isinstance(group, str) or not DNS_LABEL.match(group) or len(group) > MAX_GROUP_LEN:
        raise ValueError(
            f"robot group {group!r} must be a DNS label: lowercase letters, digits and '-', "
            f"starting with a letter, at most {MAX_GROUP_LEN} characters"
        )
    return group


def check_version(version: str, model_uri: str) -> None:
    if not isinstance(version, str) or not version.strip():
        raise ValueError("model version is empty")
    if not isinstance(model_uri, str) or not model_uri.strip():
        raise ValueError("model URI is empty")


def policy_server_name(group: str) -> str:
    return POLICY_SERVER_PREFIX + check_group(group)


def policy_server_labels(group: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "policy-server",
        "app.kubernetes.io/component": POLICY_SERVER_COMPONENT,
        "app.kubernetes.io/part-of": PART_OF,
        GROUP_LABEL: check_group(group),
    }


def policy_server_selector() -> str:
    """Label selector of every group's policy server."""
    return (
        f"app.kubernetes.io/component={POLICY_SERVER_COMPONENT},app.kubernetes.io/part-of={PART_OF}"
    )


def _secret(name: str, secret: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


# What a policy server reads besides its model, as the API does (infra/base/flywheel-api.yaml):
# the store (robots' credentials and assignments), the secret key production mode requires,
# the object store's keys (the registry's artifacts) and a home for its model cache. The
# settings every Flywheel process reads come from the flywheel-config ConfigMap.
SERVER_HOME = "/var/lib/flywheel"
STORE_ENV = [
    _secret("DB_USER", "flywheel-postgres", "username"),
    _secret("DB_PASSWORD", "flywheel-postgres", "password"),
    {
        "name": "FLYWHEEL_DATABASE_URL",
        "value": "postgresql+psycopg://$(DB_USER):$(DB_PASSWORD)@postgres:5432/flywheel",
    },
    _secret("FLYWHEEL_SECRET_KEY", "flywheel-app", "secret-key"),
    _secret("AWS_ACCESS_KEY_ID", "flywheel-object-store", "access-key-id"),
    _secret("AWS_SECRET_ACCESS_KEY", "flywheel-object-store", "secret-access-key"),
    {"name": "FLYWHEEL_HOME", "value": SERVER_HOME},
]
CONFIG_MAP = "flywheel-config"


def model_env(group: str, version: str, model_uri: str) -> list[dict]:
    return [
        {"name": VERSION_ENV, "value": version},
        {"name": URI_ENV, "value": model_uri},
        {"name": GROUP_ENV, "value": group},
    ]


def model_annotations(version: str, model_uri: str) -> dict[str, str]:
    return {VERSION_ANNOTATION: version, URI_ANNOTATION: model_uri}


def policy_server_deployment(
    group: str, version: str, model_uri: str, config: PolicyServerConfig, *, namespace: str
) -> dict:
    check_version(version, model_uri)
    labels = policy_server_labels(group)
    http = {"path": config.health_path, "port": "http"}
    container = {
        "name": CONTAINER,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}],
        "env": STORE_ENV + model_env(group, version, model_uri),
        "volumeMounts": [{"name": "home", "mountPath": SERVER_HOME}],
        "ports": [{"name": "http", "containerPort": config.port, "protocol": "TCP"}],
        "resources": config.resources.manifest(),
        # Loading a model can take a while: readiness gates traffic, liveness only restarts a
        # server that stopped answering long after it started.
        "readinessProbe": {"httpGet": http, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": http,
            "initialDelaySeconds": 30,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }
    if config.args:
        container["args"] = list(config.args)
    # The model cache: downloaded again by a new pod, as it verifies what it serves anyway.
    pod_spec: dict = {"containers": [container], "volumes": [{"name": "home", "emptyDir": {}}]}
    if config.service_account:
        pod_spec["serviceAccountName"] = config.service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": policy_server_name(group),
            "namespace": namespace,
            "labels": labels,
            "annotations": model_annotations(version, model_uri),
        },
        "spec": {
            "replicas": config.replicas,
            "selector": {"matchLabels": {GROUP_LABEL: group, "app.kubernetes.io/part-of": PART_OF}},
            # Never fewer ready servers than asked for while the model changes.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": model_annotations(version, model_uri),
                },
                "spec": pod_spec,
            },
        },
    }


def policy_server_service(group: str, config: PolicyServerConfig, *, namespace: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": policy_server_name(group),
            "namespace": namespace,
            "labels": policy_server_labels(group),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {GROUP_LABEL: group, "app.kubernetes.io/part-of": PART_OF},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def version_patch(group: str, version: str, model_uri: str) -> dict:
    """Strategic-merge patch that points a group's Deployment at another model.

    Containers and env vars merge by name, so the patch touches only the three model variables
    and the annotations; the rest of the Deployment stays as applied.
    """
    check_version(version, model_uri)
    annotations = model_annotations(version, model_uri)
    return {
        "metadata": {"annotations": annotations},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "containers": [{"name": CONTAINER, "env": model_env(group, version, model_uri)}]
                },
            }
        },
    }
