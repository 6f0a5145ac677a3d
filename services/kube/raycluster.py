"""KubeRay's objects, built as plain dicts: the nightly's Ray cluster and the training RayJobs.

- ``ray_cluster``: the long-lived RayCluster whose head the nightly's Ray work joins
  (``FLYWHEEL_RAY_ADDRESS=ray://<name>-head-svc:10001``; KubeRay names the head Service so):
  closed-loop evaluation and the other Ray tasks of a night. infra/base/raycluster.yaml is
  this manifest at the default settings (tests/kube/test_raycluster.py prints it again when
  they change).
- ``training_rayjob``: a RayJob per training candidate, named after it, that brings up its own
  Ray cluster of the same shape, runs the training once, and deletes the cluster when done.

Both have one autoscaling worker group (KubeRay's in-tree autoscaler): it starts
``min_workers`` worker pods, adds pods up to ``max_workers`` while tasks, or Ray Train's
placement group, wait for resources, and removes a pod idle for ``idle_timeout_s``. The head
schedules no work (``num-cpus: 0``). Their image is Flywheel's trainer image
(infra/docker/Dockerfile, target ``trainer``): KubeRay starts Ray in it with ``bash -lc`` and
probes it with wget. Every builder returns a manifest ``validation.validate_manifest`` accepts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field

import yaml

from services.config import KubeSettings
from services.kube.manifests import PART_OF, Resources

CANDIDATE_ANNOTATION = "flywheel.dev/candidate-id"
# Hash of the RayJob spec: a second submission for the same candidate must ask for the same job.
SPEC_HASH_ANNOTATION = "flywheel.dev/spec-hash"
TRAINING_COMPONENT = "training"
RAY_COMPONENT = "ray"
WORKER_GROUP = "workers"
# KubeRay refuses longer RayJob names: it derives the cluster's and pods' names from them.
MAX_RAYJOB_NAME = 47
# The autoscaler runs as a sidecar of the head; these are its requests and limits.
AUTOSCALER = Resources(cpu="200m", memory="512Mi", cpu_limit="500m")


@dataclass(frozen=True)
class RayClusterShape:
    """A Ray cluster: one head and an autoscaling group of worker pods."""

    ray_version: str = "2.60.0"
    # Worker pods the group keeps even when idle (0: none between nights)...
    min_workers: int = 0
    # ...and the most it grows to, however much work waits.
    max_workers: int = 4
    head: Resources = field(default_factory=lambda: Resources(cpu="1", memory="4Gi"))
    worker: Resources = field(default_factory=lambda: Resources(cpu="2", memory="8Gi"))
    # Seconds a worker pod stays idle before the autoscaler removes it.
    idle_timeout_s: int = 60

    def __post_init__(self) -> None:
        if self.min_workers < 0:
            raise ValueError("a Ray cluster cannot have a negative number of workers")
        if self.max_workers < max(1, self.min_workers):
            raise ValueError(
                f"max_workers ({self.max_workers}) must be at least 1 and at least "
                f"min_workers ({self.min_workers})"
            )
        if self.idle_timeout_s < 0:
            raise ValueError("idle_timeout_s must be >= 0")

    @classmethod
    def from_settings(cls, kube: KubeSettings) -> RayClusterShape:
        """The shape FLYWHEEL_RAY_* ask for; CPU limit = request, so Ray counts what it gets."""
        cpus = str(kube.ray_worker_cpus)
        worker = Resources(
            cpu=cpus, memory=kube.ray_worker_memory, cpu_limit=cpus, gpu=kube.ray_worker_gpus
        )
        return cls(
            min_workers=kube.ray_min_workers,
            max_workers=kube.ray_max_workers,
            worker=worker,
            idle_timeout_s=kube.ray_idle_timeout_s,
        )


def _ray_pod(image: str, resources: Resources, role: str, env: list[dict], env_from: list[dict]):
    container: dict = {"name": f"ray-{role}", "image": image, "resources": resources.manifest()}
    # Copies: each pod's own lists, so no YAML dump writes one as an alias of the other.
    if env_from:
        container["envFrom"] = copy.deepcopy(env_from)
    if env:
        container["env"] = copy.deepcopy(env)
    if role == "head":
        container["ports"] = [
            {"name": "gcs", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            {"name": "client", "containerPort": 10001},
        ]
    return {"spec": {"containers": [container]}}


def cluster_spec(
    image: str, shape: RayClusterShape, *, env: list[dict] = (), env_from: list[dict] = ()
) -> dict:
    """The spec of a RayCluster (and of a RayJob's rayClusterSpec) of ``shape``."""
    if not image:
        raise ValueError("Ray image is empty")
    env, env_from = list(env), list(env_from)
    return {
        "rayVersion": shape.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "idleTimeoutSeconds": shape.idle_timeout_s,
            "upscalingMode": "Default",
            "resources": AUTOSCALER.manifest(),
        },
        "headGroupSpec": {
            # The head coordinates; the workers run the tasks.
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": _ray_pod(image, shape.head, "head", env, env_from),
        },
        "workerGroupSpecs": [
            {
                "groupName": WORKER_GROUP,
                "replicas": shape.min_workers,
                "minReplicas": shape.min_workers,
                "maxReplicas": shape.max_workers,
                "rayStartParams": {},
                "template": _ray_pod(image, shape.worker, "worker", env, env_from),
            }
        ],
    }


def ray_cluster(
    name: str,
    *,
    image: str,
    shape: RayClusterShape,
    namespace: str | None = None,
    env: list[dict] = (),
    env_from: list[dict] = (),
) -> dict:
    """The long-lived RayCluster; no namespace leaves it to kustomize's overlays."""
    metadata: dict = {
        "name": name,
        "labels": {
            "app.kubernetes.io/component": RAY_COMPONENT,
            "app.kubernetes.io/part-of": PART_OF,
        },
    }
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": metadata,
        "spec": cluster_spec(image, shape, env=env, env_from=env_from),
    }


def training_job_name(candidate_id: str) -> str:
    """RayJob name of a candidate: stable, DNS-1035, within KubeRay's length limit."""
    if not isinstance(candidate_id, str) or not candidate_id.strip():
        raise ValueError("candidate id is empty")
    slug = re.sub(r"[^a-z0-9]+", "-", candidate_id.lower()).strip("-")
    name = f"train-{slug}"
    if len(name) <= MAX_RAYJOB_NAME and slug:
        return name
    # Too long (or nothing left after cleaning): keep a readable prefix and a hash of the id.
    digest = hashlib.sha256(candidate_id.encode()).hexdigest()[:10]
    prefix = name[: MAX_RAYJOB_NAME - len(digest) - 1].rstrip("-")
    return f"{prefix}-{digest}"


def training_rayjob(
    candidate_id: str,
    *,
    image: str,
    entrypoint: str,
    namespace: str,
    shape: RayClusterShape,
    runtime_env: dict | None = None,
    env: dict[str, str] | None = None,
    active_deadline_s: int | None = None,
    backoff_limit: int = 0,
    ttl_after_finished_s: int = 600,
) -> dict:
    """A RayJob that brings up its own Ray cluster, runs `entrypoint` once, and tears it down."""
    if not image:
        raise ValueError("training image is empty")
    if not entrypoint or not entrypoint.strip():
        raise ValueError("training entrypoint is empty")
    if active_deadline_s is not None and active_deadline_s < 1:
        raise ValueError("active_deadline_s must be a positive number of seconds")
    env = dict(env or {})
    env.setdefault("FLYWHEEL_CANDIDATE_ID", candidate_id)
    spec: dict = {
        "entrypoint": entrypoint,
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": ttl_after_finished_s,
        "backoffLimit": backoff_limit,
        "metadata": {"candidate": candidate_id[:256]},
        "rayClusterSpec": cluster_spec(
            image, shape, env=[{"name": k, "value": v} for k, v in sorted(env.items())]
        ),
    }
    if runtime_env:
        spec["runtimeEnvYAML"] = yaml.safe_dump(runtime_env, sort_keys=True)
    if active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = active_deadline_s
    spec_hash = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {
            "name": training_job_name(candidate_id),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/component": TRAINING_COMPONENT,
                "app.kubernetes.io/part-of": PART_OF,
            },
            "annotations": {CANDIDATE_ANNOTATION: candidate_id, SPEC_HASH_ANNOTATION: spec_hash},
        },
        "spec": spec,
    }
