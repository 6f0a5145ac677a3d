"""Keep the cluster's policy servers on the versions the fleet's assignments say.

The database is the source of truth: the controller commits a transition first, then calls
``sync_policy_servers``, which is idempotent (create-or-patch; a group already on its version
is left alone), so a controller that died in between repairs it on its next call.

One policy-server Deployment per robot group. A group follows its robots when they all run
one version; while a stage splits a group (canary robots on the candidate, the rest on the
champion), its server's preloaded version stays the champion, and the server serves each
canary robot the candidate all the same: ``flywheel policy-server`` answers every robot from
its own assignment (services/policy_server/routing.py), loading the candidate when the first
robot is moved to it.

Nothing here runs without ``FLYWHEEL_KUBE_NAMESPACE``; there is no Kubernetes API server on
the development machine, so the tests use the stand-in server in ``tests/kube``.
"""

from __future__ import annotations

from collections import defaultdict

from services.config import Settings
from services.serving.assignments import fleet
from services.store import session_scope


def group_versions(settings: Settings) -> dict[str, str]:
    """Per robot group, the one version all its robots run (split groups left out)."""
    versions: dict[str, set] = defaultdict(set)
    with session_scope(settings.db_url) as session:
        for robot in fleet(session=session):
            versions[robot.group].add(robot.policy_version)
    return {g: v.pop() for g, v in versions.items() if len(v) == 1 and None not in v}


def sync_policy_servers(settings: Settings, backend=None) -> dict[str, str]:
    """Apply each group's version to its policy server; returns what was applied."""
    if backend is None:
        if settings.kube.kube_namespace is None:
            return {}
        backend = kube_backend(settings)
    wanted = group_versions(settings)
    current = backend.current_versions()
    for group, version in wanted.items():
        if current.get(group) != version:
            backend.apply_policy_server(
                group, version, f"models:/{settings.registry.model_name}/{version}"
            )
    return wanted


def kube_backend(settings: Settings):
    from services.kube.backend import KubernetesBackend
    from services.kube.manifests import PolicyServerConfig
    from services.kube.raycluster import RayClusterShape

    return KubernetesBackend.connect(
        namespace=settings.kube.kube_namespace,
        policy_server=PolicyServerConfig(image=settings.kube.policy_server_image),
        ray_shape=RayClusterShape.from_settings(settings.kube),
        in_cluster=settings.kube.kube_in_cluster,
        kubeconfig=settings.kube.kubeconfig,
        context=settings.kube.kube_context,
    )
