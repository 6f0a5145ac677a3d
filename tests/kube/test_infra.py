"""infra/: both overlays render with kustomize and every object passes the schemas and the
production rules (resources, /health probes, secrets only by reference, wiring that resolves).

Rendering uses ``kubectl kustomize`` (kustomize built into kubectl, from the machine's Debian
image); nothing is applied: no Kubernetes API server runs here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from cli import app
from flows.work_pool import SERVICE_ACCOUNT, flow_run_template
from services.config import KubeSettings
from services.kube.validation import validate_all

INFRA = Path(__file__).resolve().parents[2] / "infra"
OVERLAYS = ["production", "dev"]
WORKLOADS = {"Deployment", "StatefulSet"}
# The Secrets an installation creates before the first apply (infra/README.md), and their keys.
SECRETS = {
    "flywheel-postgres": {"username", "password"},
    "flywheel-app": {"secret-key"},
    "flywheel-object-store": {"access-key-id", "secret-access-key"},
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
# A URL with credentials in it: user:password@host.
CREDENTIALS_IN_URL = re.compile(r"://([^/@\s]*):([^/@\s]*)@")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed on this machine")
    out = subprocess.run(
        [kubectl, "kustomize", str(INFRA / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> list[dict]:
    return render(request.param)


def pod_specs(objects: list[dict]):
    """(owner name, pod spec) for every pod template, RayCluster groups included."""
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
        elif obj["kind"] == "RayCluster":
            spec = obj["spec"]
            yield f"{obj['metadata']['name']}/head", spec["headGroupSpec"]["template"]["spec"]
            for group in spec.get("workerGroupSpecs", []):
                yield f"{obj['metadata']['name']}/{group['groupName']}", group["template"]["spec"]


def containers(objects: list[dict]):
    for owner, spec in pod_specs(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield owner, spec, container


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_object_passes_the_kubernetes_and_kuberay_schemas(rendered):
    validate_all(rendered)
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "StatefulSet", "Service", "RayCluster", "Role"} <= kinds
    names = set(by_kind(rendered, "Deployment"))
    assert {"mlflow", "prefect-server", "prefect-worker", "flywheel-api"} <= names
    assert "rollout-controller" in names
    assert "postgres" in by_kind(rendered, "StatefulSet")


def test_everything_lands_in_one_namespace(rendered):
    namespaces = {o["metadata"].get("namespace") for o in rendered}
    assert len(namespaces) == 1 and None not in namespaces


def test_every_container_has_requests_and_a_memory_limit(rendered):
    for owner, _, container in containers(rendered):
        resources = container.get("resources", {})
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), (owner, container["name"])
        assert "memory" in resources.get("limits", {}), (owner, container["name"])


def test_long_running_servers_are_probed_on_their_health_endpoints(rendered):
    for owner, spec, container in containers(rendered):
        if owner not in {o["metadata"]["name"] for o in rendered if o["kind"] in WORKLOADS}:
            continue  # Ray pods are probed by KubeRay itself
        if container in spec.get("initContainers", []):
            continue
        ports = {p.get("name") for p in container.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in container, (owner, container["name"], probe)
            http = container[probe].get("httpGet")
            if http is None:
                assert owner == "postgres"  # PostgreSQL speaks no HTTP: pg_isready
                continue
            # Prefect serves its health check under its API prefix.
            wanted = "/api/health" if owner == "prefect-server" else "/health"
            assert http["path"] == wanted, (owner, probe)
            assert http["port"] in ports, (owner, probe, http["port"])


def test_no_secret_is_inline(rendered):
    assert not by_kind(rendered, "Secret"), "Secrets are created out of band, never rendered"
    for owner, _, container in containers(rendered):
        for env in container.get("env", []):
            where = (owner, container["name"], env["name"])
            if SECRET_NAME.search(env["name"]):
                assert "secretKeyRef" in env.get("valueFrom", {}), where
            for _, password in CREDENTIALS_IN_URL.findall(env.get("value", "")):
                assert VAR_REF.fullmatch(password), where
        for arg in container.get("args", []) + container.get("command", []):
            for _, password in CREDENTIALS_IN_URL.findall(arg):
                assert VAR_REF.fullmatch(password), (owner, container["name"], arg)


def test_secrets_and_config_maps_referenced_exist_or_are_documented(rendered):
    config_maps = by_kind(rendered, "ConfigMap")
    readme = (INFRA / "README.md").read_text()
    for name, keys in SECRETS.items():
        assert name in readme
        for key in keys:
            assert key in readme, (name, key)
    for owner, _, container in containers(rendered):
        for env in container.get("env", []):
            source = env.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                assert ref["key"] in SECRETS.get(ref["name"], set()), (owner, ref)
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                assert ref["key"] in config_maps[ref["name"]]["data"], (owner, ref)
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in config_maps, owner
    for owner, spec in pod_specs(rendered):
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, (owner, volume)


def test_variable_references_resolve(rendered):
    """Kubernetes leaves an unknown $(VAR) as it is: a URL would then carry the literal text."""
    config_maps = by_kind(rendered, "ConfigMap")
    for owner, _, container in containers(rendered):
        known = set()
        for source in container.get("envFrom", []):
            known |= set(config_maps[source["configMapRef"]["name"]]["data"])
        for env in container.get("env", []):
            for ref in VAR_REF.findall(env.get("value", "")):
                assert ref in known, (owner, container["name"], env["name"], ref)
            known.add(env["name"])
        for arg in container.get("args", []) + container.get("command", []):
            for ref in VAR_REF.findall(arg):
                assert ref in known, (owner, container["name"], ref)


def test_services_reach_pods_on_named_ports(rendered):
    pods = [
        (o["spec"]["template"]["metadata"]["labels"], o["spec"]["template"]["spec"])
        for o in rendered
        if o["kind"] in WORKLOADS
    ]
    for name, service in by_kind(rendered, "Service").items():
        selector = service["spec"]["selector"]
        matched = [spec for labels, spec in pods if selector.items() <= labels.items()]
        assert matched, f"Service {name} selects no pods"
        ports = {
            p.get("name")
            for spec in matched
            for c in spec["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (name, port)


def test_service_accounts_and_role_bindings_resolve(rendered):
    accounts, roles = by_kind(rendered, "ServiceAccount"), by_kind(rendered, "Role")
    for owner, spec in pod_specs(rendered):
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts, owner
    for name, binding in by_kind(rendered, "RoleBinding").items():
        assert binding["roleRef"]["name"] in roles, name
        for subject in binding["subjects"]:
            assert subject["name"] in accounts, (name, subject)


def allowed(role: dict, group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in role["rules"]
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_roles_grant_what_the_kubernetes_backend_calls(rendered):
    roles = by_kind(rendered, "Role")
    controller, jobs = roles["flywheel-controller"], roles["flywheel-jobs"]
    # apply_policy_server / set_group_version / current_versions / group_state
    assert {"create", "patch", "get", "list"} <= allowed(controller, "apps", "deployments")
    assert {"create", "patch"} <= allowed(controller, "", "services")
    # submit_training_job / job_status
    assert {"create", "get"} <= allowed(jobs, "ray.io", "rayjobs")


def test_production_pins_images_and_keeps_the_api_available():
    objects = render("production")
    for owner, _, container in containers(objects):
        image = container["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (owner, image)
    api = by_kind(objects, "Deployment")["flywheel-api"]
    assert api["spec"]["replicas"] >= 2
    (budget,) = by_kind(objects, "PodDisruptionBudget").values()
    assert budget["spec"]["selector"]["matchLabels"].items() <= (
        api["spec"]["template"]["metadata"]["labels"].items()
    )


def cli_commands(objects: list[dict]) -> list[list[str]]:
    return [
        container["command"][1:] + container.get("args", [])
        for _, _, container in containers(objects)
        if container.get("command", [""])[0] == "flywheel"
    ]


def resolve(argv: list[str]):
    """The click command an argv of `flywheel` reaches, and the options left after it."""
    command = get_command(app)
    words = list(argv)
    while words and hasattr(command, "commands") and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    return command, words


def test_flywheel_containers_run_commands_the_cli_has():
    for argv in cli_commands(render("production")):
        command, rest = resolve(argv)
        assert not hasattr(command, "commands"), argv
        options = {o for p in command.params for o in p.opts}
        assert {w for w in rest if w.startswith("--")} <= options, argv


def test_the_rollout_controller_command_exists():
    (argv,) = [a for a in cli_commands(render("production")) if a[:1] == ["rollout"]]
    command, rest = resolve(argv)
    assert command.name == "watch"
    assert {w for w in rest if w.startswith("--")} <= {o for p in command.params for o in p.opts}


def test_the_images_flywheel_starts_are_the_ones_the_overlay_runs(rendered, monkeypatch):
    """The ConfigMap's FLYWHEEL_IMAGE_* (policy servers, RayJobs, flow runs) and kustomize's
    `images:` (the manifests' containers) name the same registry and tag."""
    data = by_kind(rendered, "ConfigMap")["flywheel-config"]["data"]
    for key in ("FLYWHEEL_IMAGE_REGISTRY", "FLYWHEEL_IMAGE_TAG"):
        monkeypatch.setenv(key, data[key])
    kube = KubeSettings()
    api = by_kind(rendered, "Deployment")["flywheel-api"]["spec"]["template"]["spec"]
    assert {c["image"] for c in api["containers"]} == {kube.flow_image}
    ray = {c["image"] for owner, _, c in containers(rendered) if owner.startswith("flywheel-ray/")}
    assert ray == {kube.training_image}
    assert kube.policy_server_image == kube.flow_image.replace(
        "/flywheel:", "/flywheel-policy-server:"
    )


def test_flow_run_pods_get_only_secrets_and_config_the_install_has(rendered):
    """The work pool's job template (flows/work_pool.py) wires what the overlays provide."""
    pod = flow_run_template()["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert ref["key"] in SECRETS.get(ref["name"], set()), ref
    config_maps = by_kind(rendered, "ConfigMap")
    for source in container["envFrom"]:
        assert source["configMapRef"]["name"] in config_maps
    assert pod["serviceAccountName"] == "{{ service_account_name }}"
    assert SERVICE_ACCOUNT in by_kind(rendered, "ServiceAccount")
