"""The Prefect Kubernetes work pool that Flywheel's flows run on: its job template and each
deployment's job variables, checked before a deployment is registered.

On a Kubernetes work pool a flow run is a Job that the Prefect worker
(infra/base/prefect-worker.yaml) creates from the pool's base job template, filled in with the
deployment's job variables. Flywheel's deployments there run from the Flywheel image
(``settings.kube.flow_image``, infra/docker/Dockerfile target ``api``), which has flows/
installed: the entrypoint is a module path and nothing is pulled, where
``flow.from_source(<this checkout>)`` would name a folder that no pod has.

The template is Prefect's own default for the kubernetes worker (the one its server ships),
with what a Flywheel flow run needs added: the settings ConfigMap and the Secrets, wired as
the API's pod has them (infra/README.md), the namespace and the in-cluster service account for
the training RayJobs, a non-root pod, and ``parallelism``/``completions`` moved from the pod
spec, where Prefect's default puts them and Kubernetes drops them, to the Job spec.

Checked here, offline: the job variables against the template's variable schema (an unknown
one is refused: the worker would ignore it), and the Job the worker would create, rendered
with Prefect's own templating, against the Kubernetes Job schema (services/kube/validation.py).
No Prefect worker and no Kubernetes API server run on the development machine.
"""

from __future__ import annotations

import copy
import json
from importlib.resources import files

import jsonschema
from prefect.utilities.templating import apply_values

from services.config import KubeSettings
from services.kube.manifests import Resources
from services.kube.validation import ManifestError, validate_manifest

# The service account of flow-run pods: it may submit and follow RayJobs (prefect-worker.yaml).
SERVICE_ACCOUNT = "flywheel-jobs"
# A flow run orchestrates: the Ray cluster and the RayJobs do the heavy work.
FLOW_RUN = Resources(cpu="500m", memory="2Gi", cpu_limit="2")
# Finished flow-run Jobs (and their logs) are kept a day, then removed by Kubernetes.
FINISHED_JOB_TTL_S = 24 * 3600
_DB_URL = "postgresql+psycopg://$(DB_USER):$(DB_PASSWORD)@postgres:5432/flywheel"


def _secret(name: str, secret: str, key: str) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


# What every Flywheel pod that touches the store gets (as in infra/base/flywheel-api.yaml).
FLOW_RUN_ENV = [
    _secret("DB_USER", "flywheel-postgres", "username"),
    _secret("DB_PASSWORD", "flywheel-postgres", "password"),
    {"name": "FLYWHEEL_DATABASE_URL", "value": _DB_URL},
    _secret("FLYWHEEL_SECRET_KEY", "flywheel-app", "secret-key"),
    _secret("AWS_ACCESS_KEY_ID", "flywheel-object-store", "access-key-id"),
    _secret("AWS_SECRET_ACCESS_KEY", "flywheel-object-store", "secret-access-key"),
    # The train stage submits a RayJob in the pod's own namespace, as its service account.
    {
        "name": "FLYWHEEL_KUBE_NAMESPACE",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    },
    {"name": "FLYWHEEL_KUBE_IN_CLUSTER", "value": "true"},
]


def prefect_default_template() -> dict:
    """Prefect's default base job template of the kubernetes worker type, as its server ships it
    (what `prefect work-pool create --type kubernetes` gets with prefect-kubernetes installed)."""
    views = files("prefect.server.api") / "collections_data" / "views"
    metadata = json.loads((views / "aggregate-worker-metadata.json").read_text())
    kubernetes = metadata["prefect-kubernetes"]["kubernetes"]
    return copy.deepcopy(kubernetes["default_base_job_configuration"])


def flow_run_template() -> dict:
    """The base job template Flywheel creates its Kubernetes work pool with."""
    template = prefect_default_template()
    job = template["job_configuration"]["job_manifest"]
    pod = job["spec"]["template"]["spec"]
    for field in ("parallelism", "completions"):
        if field in pod:
            job["spec"][field] = pod.pop(field)
    pod["securityContext"] = {"runAsNonRoot": True, "runAsUser": 1000}
    (container,) = pod["containers"]
    # A list here, not "{{ env }}": the worker puts the job variables' env (and Prefect's own
    # variables) in front of it.
    container["env"] = copy.deepcopy(FLOW_RUN_ENV)
    container["envFrom"] = [{"configMapRef": {"name": "flywheel-config"}}]
    return template


def job_variables(kube: KubeSettings, namespace: str) -> dict:
    """The job variables of every Flywheel deployment on the Kubernetes work pool."""
    resources = FLOW_RUN.manifest()
    return {
        "image": kube.flow_image,
        "namespace": namespace,
        "service_account_name": SERVICE_ACCOUNT,
        "image_pull_policy": "IfNotPresent",
        "finished_job_ttl": FINISHED_JOB_TTL_S,
        "cpu_request": resources["requests"]["cpu"],
        "cpu_limit": resources["limits"]["cpu"],
        "memory_request": resources["requests"]["memory"],
        "memory_limit": resources["limits"]["memory"],
    }


def flow_run_job(template: dict, variables: dict, *, name: str) -> dict:
    """The Job a worker of a pool with ``template`` would create for a deployment named
    ``name`` with ``variables``; ManifestError if a variable or the Job is invalid."""
    schema = template.get("variables") or {}
    known = schema.get("properties") or {}
    unknown = sorted(set(variables) - set(known))
    if unknown:
        raise ManifestError(
            f"job variables {unknown} are not in the work pool's template (it has "
            f"{sorted(known)}): the worker would ignore them"
        )
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(variables), key=lambda e: e.json_path
    )
    if errors:
        lines = [f"  {e.json_path.removeprefix('$.')}: {e.message[:200]}" for e in errors[:10]]
        raise ManifestError("invalid job variables:\n" + "\n".join(lines))
    values = {k: v["default"] for k, v in known.items() if "default" in v}
    values |= {**variables, "name": name}
    job = apply_values(template["job_configuration"]["job_manifest"], values, remove_notset=True)
    # What the worker adds per flow run: the env job variable in front of the template's list,
    # and a name (it asks for generateName; the schema check needs a name).
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = [{"name": k, "value": v} for k, v in (values.get("env") or {}).items()]
    container["env"] = env + list(container.get("env") or [])
    job["metadata"]["name"] = job["metadata"].pop("generateName", f"{name}-").rstrip("-")
    validate_manifest(job)
    return job
