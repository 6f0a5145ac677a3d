"""JSON schemas for the KubeRay custom resources Flywheel writes: RayCluster and RayJob (ray.io/v1).

The Kubernetes JSON schemas bundled with ``kubernetes-validate`` cover only the built-in kinds.
These two were written by hand from KubeRay's API types (``ray-operator/apis/ray/v1``,
``raycluster_types.go`` and ``rayjob_types.go``, KubeRay v1.x): every field of the specs is
listed with its type, fields the Go types serialise without ``omitempty`` are required, and
unknown fields are refused, so a misspelt field fails here instead of being dropped by the
server. Pod templates are checked against the bundled Kubernetes ``PodTemplateSpec`` itself.
Status is left open: the KubeRay operator writes it, not us.
"""

from __future__ import annotations

K8S_DEFS = "https://kubernetes.io/api/_definitions.json#/$defs/"


def _k8s(name: str) -> dict:
    return {"$ref": K8S_DEFS + name}


_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

_HEAD_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rayStartParams", "template"],
    "properties": {
        "serviceType": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "headService": _k8s("io.k8s.api.core.v1.Service"),
        "enableIngress": {"type": "boolean"},
        "rayStartParams": _STRING_MAP,
        "template": _k8s("io.k8s.api.core.v1.PodTemplateSpec"),
    },
}

_WORKER_GROUP = {
    "type": "object",
    "additionalProperties": False,
    "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
    "properties": {
        "groupName": {"type": "string", "minLength": 1},
        "replicas": {**_INT32, "minimum": 0},
        "minReplicas": {**_INT32, "minimum": 0},
        "maxReplicas": {**_INT32, "minimum": 0},
        "numOfHosts": {**_INT32, "minimum": 1},
        "rayStartParams": _STRING_MAP,
        "template": _k8s("io.k8s.api.core.v1.PodTemplateSpec"),
        "scaleStrategy": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "workersToDelete": {"type": "array", "items": {"type": "string"}},
                "multihostReplicasToDelete": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}

RAY_CLUSTER_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["headGroupSpec"],
    "properties": {
        "headGroupSpec": _HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "resources": _k8s("io.k8s.api.core.v1.ResourceRequirements"),
                "image": {"type": "string"},
                "imagePullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
                "env": {"type": "array", "items": _k8s("io.k8s.api.core.v1.EnvVar")},
                "envFrom": {"type": "array", "items": _k8s("io.k8s.api.core.v1.EnvFromSource")},
                "volumeMounts": {
                    "type": "array",
                    "items": _k8s("io.k8s.api.core.v1.VolumeMount"),
                },
                "securityContext": _k8s("io.k8s.api.core.v1.SecurityContext"),
                "idleTimeoutSeconds": {**_INT32, "minimum": 0},
                "upscalingMode": {
                    "type": "string",
                    "enum": ["Default", "Aggressive", "Conservative"],
                },
            },
        },
        "headServiceAnnotations": _STRING_MAP,
        "suspend": {"type": "boolean"},
    },
}

_DELETION_POLICY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["policy"],
    "properties": {
        "policy": {
            "type": "string",
            "enum": ["DeleteCluster", "DeleteWorkers", "DeleteSelf", "DeleteNone"],
        }
    },
}

RAY_JOB_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "activeDeadlineSeconds": {**_INT32, "minimum": 1},
        "backoffLimit": {**_INT32, "minimum": 0},
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "submitterPodTemplate": _k8s("io.k8s.api.core.v1.PodTemplateSpec"),
        "metadata": _STRING_MAP,
        "clusterSelector": _STRING_MAP,
        "submitterConfig": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"backoffLimit": {**_INT32, "minimum": 0}},
        },
        "managedBy": {
            "type": "string",
            "enum": ["ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"],
        },
        "deletionStrategy": {
            "type": "object",
            "additionalProperties": False,
            "required": ["onSuccess", "onFailure"],
            "properties": {"onSuccess": _DELETION_POLICY, "onFailure": _DELETION_POLICY},
        },
        "entrypoint": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"},
        "submissionMode": {"type": "string", "enum": ["K8sJobMode", "HTTPMode", "InteractiveMode"]},
        "entrypointResources": {"type": "string"},
        "entrypointNumCpus": {"type": "number", "minimum": 0},
        "entrypointNumGpus": {"type": "number", "minimum": 0},
        "ttlSecondsAfterFinished": {**_INT32, "minimum": 0},
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "suspend": {"type": "boolean"},
        "schedule": {"type": "string"},
    },
    # A RayJob either brings its own cluster or selects a running one.
    "oneOf": [{"required": ["rayClusterSpec"]}, {"required": ["clusterSelector"]}],
}


def _resource(kind: str, spec: dict) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": _k8s("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
            "spec": spec,
            "status": {"type": "object"},
        },
    }


# (apiVersion, kind) -> schema
SCHEMAS: dict[tuple[str, str], dict] = {
    ("ray.io/v1", "RayCluster"): _resource("RayCluster", RAY_CLUSTER_SPEC),
    ("ray.io/v1", "RayJob"): _resource("RayJob", RAY_JOB_SPEC),
}
