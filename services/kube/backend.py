"""The Kubernetes backend: policy servers per robot group, and training as KubeRay RayJobs.

Every call is idempotent, so the rollout controller and the nightly flow may repeat one after a
crash: objects are created, and on 409 AlreadyExists patched to the wanted state; patching a
group to the version it already runs changes nothing. Manifests are validated against the
Kubernetes schemas (``validation.py``) before they are sent.

The settings a deployment passes (the caller reads them; this module reads no environment):

- ``namespace``: where the policy servers and RayJobs live (the chart's namespace).
- the API client: ``KubernetesBackend.connect(in_cluster=True)`` inside the cluster (the
  pod's service account; the chart's Role grants what this module uses), or a kubeconfig path
  and context from outside; or any ``kubernetes.client.ApiClient``.
- ``PolicyServerConfig``: the policy-server image, its port, replicas and resources.
- ``RayClusterShape``: the autoscaling worker group of each training RayJob's Ray cluster.
- for training: the image (Flywheel's trainer image, with Ray and torch) and the entrypoint.

Tested against a stand-in: ``tests/kube/apiserver.py`` answers the API paths used here over
HTTP, keeps objects in memory and applies the patches; no real API server ran in the tests.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from services.kube import manifests as m
from services.kube import raycluster as ray
from services.kube.manifests import PolicyServerConfig
from services.kube.raycluster import RayClusterShape
from services.kube.validation import validate_manifest

log = logging.getLogger(__name__)

RAY_GROUP, RAY_VERSION, RAYJOBS = "ray.io", "v1", "rayjobs"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
# KubeRay's jobDeploymentStatus values after which nothing more happens to a RayJob.
TERMINAL_DEPLOYMENT = {"Complete", "Failed"}


class KubeError(RuntimeError):
    """The API server refused a request; the message says which object and why."""


class JobConflictError(KubeError):
    """A RayJob exists for this candidate, but was submitted with a different spec."""


@dataclass(frozen=True)
class PolicyServerState:
    group: str
    version: str | None
    model_uri: str | None
    replicas: int
    # Every replica runs the current pod template and is available: the version is live.
    rolled_out: bool


@dataclass(frozen=True)
class TrainingJobStatus:
    name: str
    candidate_id: str | None
    # KubeRay's jobDeploymentStatus ("Initializing", "Running", "Complete", "Failed", ...),
    # "" while the operator has not picked the job up.
    deployment_status: str
    # The Ray job's own status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), "" before it runs.
    job_status: str
    message: str

    @property
    def finished(self) -> bool:
        return self.deployment_status in TERMINAL_DEPLOYMENT

    @property
    def succeeded(self) -> bool:
        return self.deployment_status == "Complete" and self.job_status == "SUCCEEDED"


def _reason(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or exc.reason or ""
    except (ValueError, AttributeError):
        return str(exc.body or exc.reason)


class KubernetesBackend:
    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str,
        policy_server: PolicyServerConfig | None = None,
        ray_shape: RayClusterShape | None = None,
        field_manager: str = "flywheel",
    ) -> None:
        if not m.DNS_LABEL.match(namespace or ""):
            raise ValueError(f"namespace {namespace!r} is not a DNS label")
        self.namespace = namespace
        self.policy_server = policy_server
        self.ray_shape = ray_shape or RayClusterShape()
        self.field_manager = field_manager
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def connect(
        cls,
        *,
        namespace: str,
        policy_server: PolicyServerConfig | None = None,
        ray_shape: RayClusterShape | None = None,
        in_cluster: bool = False,
        kubeconfig: str | None = None,
        context: str | None = None,
    ) -> KubernetesBackend:
        """Connect with the pod's service account (in_cluster) or a kubeconfig file."""
        from kubernetes import config as kube_config

        configuration = client.Configuration()
        if in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            kube_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        return cls(
            client.ApiClient(configuration),
            namespace=namespace,
            policy_server=policy_server,
            ray_shape=ray_shape,
        )

    # -- policy servers ----------------------------------------------------------------------

    def apply_policy_server(self, group: str, version: str, model_uri: str) -> PolicyServerState:
        """Create or update the group's policy-server Deployment and Service to serve `version`."""
        if self.policy_server is None:
            raise ValueError("this backend was built without a PolicyServerConfig")
        deployment = m.policy_server_deployment(
            group, version, model_uri, self.policy_server, namespace=self.namespace
        )
        service = m.policy_server_service(group, self.policy_server, namespace=self.namespace)
        validate_manifest(deployment)
        validate_manifest(service)
        name = deployment["metadata"]["name"]
        self._create_or_patch(
            "Deployment",
            name,
            create=lambda: self.apps.create_namespaced_deployment(
                self.namespace,
                client.V1Deployment.from_dict(deployment),
                field_manager=self.field_manager,
            ),
            patch=lambda: self.apps.patch_namespaced_deployment(
                name,
                self.namespace,
                deployment,
                field_manager=self.field_manager,
                _content_type=STRATEGIC_MERGE,
            ),
        )
        self._create_or_patch(
            "Service",
            name,
            create=lambda: self.core.create_namespaced_service(
                self.namespace,
                client.V1Service.from_dict(service),
                field_manager=self.field_manager,
            ),
            patch=lambda: self.core.patch_namespaced_service(
                name,
                self.namespace,
                service,
                field_manager=self.field_manager,
                _content_type=STRATEGIC_MERGE,
            ),
        )
        return self.group_state(group)

    def set_group_version(self, group: str, version: str, model_uri: str) -> PolicyServerState:
        """Point an existing group's policy server at another model (a rolling update)."""
        self._patch_deployment(
            m.policy_server_name(group), m.version_patch(group, version, model_uri)
        )
        return self.group_state(group)

    def group_state(self, group: str) -> PolicyServerState:
        name = m.policy_server_name(group)
        try:
            deployment = self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            raise self._error(exc, "read", "Deployment", name) from exc
        return _state(deployment)

    def current_versions(self) -> dict[str, str | None]:
        """The model version each robot group's policy server is set to, by group."""
        return {state.group: state.version for state in self.policy_servers()}

    def policy_servers(self) -> list[PolicyServerState]:
        try:
            listing = self.apps.list_namespaced_deployment(
                self.namespace, label_selector=m.policy_server_selector()
            )
        except ApiException as exc:
            raise self._error(exc, "list", "Deployment", m.policy_server_selector()) from exc
        return sorted((_state(d) for d in listing.items), key=lambda s: s.group)

    def _create_or_patch(self, kind: str, name: str, *, create, patch) -> None:
        """Create; if the name is taken (409), patch the object to the wanted state instead."""
        try:
            create()
            log.info("created %s %s/%s", kind, self.namespace, name)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(exc, "create", kind, name) from exc
        try:
            patch()
        except ApiException as exc:
            raise self._error(exc, "patch", kind, name) from exc

    def _patch_deployment(self, name: str, patch: dict) -> None:
        try:
            self.apps.patch_namespaced_deployment(
                name,
                self.namespace,
                patch,
                field_manager=self.field_manager,
                _content_type=STRATEGIC_MERGE,
            )
        except ApiException as exc:
            raise self._error(exc, "patch", "Deployment", name) from exc

    # -- training ----------------------------------------------------------------------------

    def submit_training_job(
        self,
        candidate_id: str,
        image: str,
        entrypoint: str,
        *,
        shape: RayClusterShape | None = None,
        runtime_env: dict | None = None,
        env: dict[str, str] | None = None,
        active_deadline_s: int | None = None,
    ) -> TrainingJobStatus:
        """Submit the candidate's RayJob once; submitting the same job again returns its status.

        The job is named after the candidate, so a crashed flow that submits again finds the
        job it started. The same name with a different spec is refused (JobConflictError), not
        silently replaced: a running training job is never changed under its feet.
        """
        job = ray.training_rayjob(
            candidate_id,
            image=image,
            entrypoint=entrypoint,
            namespace=self.namespace,
            shape=shape or self.ray_shape,
            runtime_env=runtime_env,
            env=env,
            active_deadline_s=active_deadline_s,
        )
        validate_manifest(job)
        name = job["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object(
                RAY_GROUP,
                RAY_VERSION,
                self.namespace,
                RAYJOBS,
                job,
                field_manager=self.field_manager,
            )
            log.info("submitted RayJob %s for candidate %s", name, candidate_id)
            return self.job_status(name)
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(exc, "create", "RayJob", name) from exc
        existing = self._read_job(name)
        wanted = job["metadata"]["annotations"][ray.SPEC_HASH_ANNOTATION]
        found = (existing["metadata"].get("annotations") or {}).get(ray.SPEC_HASH_ANNOTATION)
        if found != wanted:
            raise JobConflictError(
                f"RayJob {self.namespace}/{name} exists for candidate {candidate_id} with another "
                f"spec (hash {found}, wanted {wanted}); delete it to resubmit"
            )
        return _job_status(existing)

    def job_status(self, name: str) -> TrainingJobStatus:
        return _job_status(self._read_job(name))

    def _read_job(self, name: str) -> dict:
        try:
            return self.custom.get_namespaced_custom_object(
                RAY_GROUP, RAY_VERSION, self.namespace, RAYJOBS, name
            )
        except ApiException as exc:
            raise self._error(exc, "read", "RayJob", name) from exc

    def _error(self, exc: ApiException, verb: str, kind: str, name: str) -> KubeError:
        what = f"{verb} {kind} {self.namespace}/{name}"
        if exc.status == 404 and verb in {"read", "patch"}:
            return KubeError(f"cannot {what}: not found ({_reason(exc)})")
        return KubeError(f"cannot {what}: HTTP {exc.status} {_reason(exc)}")


def _state(deployment: client.V1Deployment) -> PolicyServerState:
    meta, spec, status = deployment.metadata, deployment.spec, deployment.status
    annotations = (spec.template.metadata.annotations if spec.template.metadata else None) or {}
    replicas = spec.replicas if spec.replicas is not None else 1
    rolled_out = bool(
        status
        and (status.observed_generation or 0) >= (meta.generation or 0)
        and (status.updated_replicas or 0) == replicas
        and (status.available_replicas or 0) == replicas
        and (status.replicas or 0) == replicas
    )
    return PolicyServerState(
        group=(meta.labels or {}).get(
            m.GROUP_LABEL, meta.name.removeprefix(m.POLICY_SERVER_PREFIX)
        ),
        version=annotations.get(m.VERSION_ANNOTATION),
        model_uri=annotations.get(m.URI_ANNOTATION),
        replicas=replicas,
        rolled_out=rolled_out,
    )


def _job_status(job: dict) -> TrainingJobStatus:
    status = job.get("status") or {}
    return TrainingJobStatus(
        name=job["metadata"]["name"],
        candidate_id=(job["metadata"].get("annotations") or {}).get(ray.CANDIDATE_ANNOTATION),
        deployment_status=status.get("jobDeploymentStatus", ""),
        job_status=status.get("jobStatus", ""),
        message=status.get("message", ""),
    )
