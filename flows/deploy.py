"""Register the nightly flow as a Prefect deployment: a cron schedule on a work pool.

A process work pool runs it on one machine (`prefect worker start --pool NAME`); a
Kubernetes work pool runs each night as a Job (infra/ has the worker). The deployment
allows one run at a time (Prefect's deployment concurrency limit), and the nightly flow
itself refuses a second night while one is running (services/nights.py), so a manual run
next to the scheduled one cannot overlap either.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/nightly.py:nightly"
POOL_TYPES = ("process", "kubernetes")


class DeployError(RuntimeError):
    """The deployment cannot be registered as asked; the message says what to change."""


def deploy_nightly(
    *,
    cron: str,
    timezone: str,
    work_pool: str,
    pool_type: str = "process",
    name: str = "nightly",
) -> UUID:
    """Create or update the nightly deployment (and its work pool); returns its id."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    if pool_type not in POOL_TYPES:
        raise DeployError(f"unknown work pool type {pool_type!r}: choose {' or '.join(POOL_TYPES)}")
    if get_current_settings().api.url is None:
        raise DeployError(
            "no Prefect server to register with: set PREFECT_API_URL to a running Prefect "
            "server (a deployment on Prefect's temporary local server would vanish with it)"
        )
    try:
        schedule = CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:
        raise DeployError(f"invalid schedule {cron!r} in {timezone!r}: {exc}") from exc
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(work_pool)
        except ObjectNotFound:
            pool = client.create_work_pool(WorkPoolCreate(name=work_pool, type=pool_type))
        if pool.type != pool_type:
            raise DeployError(
                f"work pool {work_pool!r} exists with type {pool.type}, not {pool_type}"
            )
    remote = flow.from_source(source=str(REPO), entrypoint=ENTRYPOINT)
    return remote.deploy(
        name=name,
        work_pool_name=work_pool,
        schedules=[schedule],
        concurrency_limit=1,
        description="Flywheel's nightly loop: ingest, mine, train, evaluate, gate, roll out.",
        tags=["flywheel"],
        build=False,
        push=False,
        print_next_steps=False,
    )
