"""`flywheel deploy` against a real (temporary) Prefect server."""

from __future__ import annotations

import pytest

from flows.deploy import DeployError, deploy_nightly
from services.kube.validation import ManifestError

pytestmark = pytest.mark.slow


def test_the_nightly_deployment_runs_on_a_cron_schedule_one_at_a_time(settings, prefect_harness):
    from prefect.client.orchestration import get_client

    first = deploy_nightly(cron="0 2 * * *", timezone="Europe/Berlin", work_pool="flywheel-test")
    again = deploy_nightly(cron="30 1 * * *", timezone="Europe/Berlin", work_pool="flywheel-test")
    assert again == first  # registering again updates the same deployment
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(first)
        pool = client.read_work_pool("flywheel-test")
    assert deployment.entrypoint == "flows/nightly.py:nightly"
    assert deployment.work_pool_name == "flywheel-test" and pool.type == "process"
    [schedule] = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("30 1 * * *", "Europe/Berlin")
    assert deployment.global_concurrency_limit.limit == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "every night", "timezone": "UTC"}, "invalid schedule"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "invalid schedule"),
        ({"cron": "0 2 * * *", "timezone": "UTC", "pool_type": "docker"}, "unknown work pool type"),
    ],
)
def test_bad_schedules_and_pools_are_refused_with_a_reason(prefect_harness, kwargs, message):
    with pytest.raises(DeployError, match=message):
        deploy_nightly(work_pool="flywheel-test", **kwargs)


def test_deploy_refuses_prefects_temporary_server(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(FLYWHEEL_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"))
    done = subprocess.run(  # this tree's CLI, not an installed console script
        [sys.executable, "-m", "cli", "deploy"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "set PREFECT_API_URL" in done.stdout


def test_the_retention_deployment_runs_daily_one_at_a_time(settings, prefect_harness):
    from prefect.client.orchestration import get_client

    from flows.deploy import deploy_retention

    deployment_id = deploy_retention(cron="0 1 * * *", timezone="UTC", work_pool="flywheel-test")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert deployment.entrypoint == "flows/retention.py:retention"
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 1 * * *"
    assert deployment.global_concurrency_limit.limit == 1


def test_the_nightly_runs_from_the_flywheel_image_on_a_kubernetes_pool(
    settings, prefect_harness, monkeypatch
):
    from prefect.client.orchestration import get_client

    from flows.work_pool import flow_run_job

    monkeypatch.setenv("FLYWHEEL_KUBE_NAMESPACE", "flywheel")
    monkeypatch.setenv("FLYWHEEL_IMAGE_REGISTRY", "registry.example.com/flywheel")
    monkeypatch.setenv("FLYWHEEL_IMAGE_TAG", "1.2.3")
    deployment_id = deploy_nightly(
        cron="0 2 * * *", timezone="UTC", work_pool="flywheel-k8s", pool_type="kubernetes"
    )
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
        pool = client.read_work_pool("flywheel-k8s")
    # Found by module in the image: no path of this checkout, nothing to pull.
    assert pool.type == "kubernetes" and deployment.entrypoint == "flows.nightly.nightly"
    assert not deployment.pull_steps
    image = "registry.example.com/flywheel/flywheel:1.2.3"
    variables = deployment.job_variables
    assert variables["image"] == image and variables["namespace"] == "flywheel"
    assert variables["service_account_name"] == "flywheel-jobs"
    # The Job a worker of this pool makes from it: the image, the store's Secrets, a non-root pod.
    job = flow_run_job(pool.base_job_template, variables, name="nightly")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == image and pod["serviceAccountName"] == "flywheel-jobs"
    assert {"FLYWHEEL_DATABASE_URL", "FLYWHEEL_KUBE_NAMESPACE"} <= {
        e["name"] for e in container["env"]
    }
    assert container["envFrom"] == [{"configMapRef": {"name": "flywheel-config"}}]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert job["metadata"]["namespace"] == "flywheel" and job["spec"]["parallelism"] == 1


def test_a_kubernetes_deployment_that_would_not_run_is_refused_with_the_reason(
    settings, prefect_harness, monkeypatch
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.work_pool import flow_run_job, flow_run_template, prefect_default_template

    kwargs = dict(cron="0 2 * * *", timezone="UTC", pool_type="kubernetes")
    with pytest.raises(DeployError, match="needs FLYWHEEL_KUBE_NAMESPACE"):
        deploy_nightly(work_pool="flywheel-k8s", **kwargs)
    monkeypatch.setenv("FLYWHEEL_KUBE_NAMESPACE", "flywheel")
    # A pool made with Prefect's stock template: its Job puts Job fields in the pod spec.
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name="stock-k8s", type="kubernetes", base_job_template=prefect_default_template()
            )
        )
    with pytest.raises(DeployError, match=r"(?s)'stock-k8s'.*spec\.template\.spec.*parallelism"):
        deploy_nightly(work_pool="stock-k8s", **kwargs)
    # Variables the template does not know, or of the wrong type, are named.
    with pytest.raises(ManifestError, match=r"\['imagePullPolicy'\] are not in"):
        flow_run_job(flow_run_template(), {"imagePullPolicy": "Always"}, name="nightly")
    with pytest.raises(ManifestError, match="finished_job_ttl: 'a day' is not of type 'integer'"):
        flow_run_job(flow_run_template(), {"finished_job_ttl": "a day"}, name="nightly")
