"""`flywheel deploy` against a real (temporary) Prefect server."""

from __future__ import annotations

import pytest

from flows.deploy import DeployError, deploy_nightly

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
