"""Register Flywheel's scheduled flows as Prefect deployments on a work pool.

The nightly flow runs on a cron schedule, the retention flow on another (daily, before the
night); the rollout watcher on an interval. A process work
pool runs them on one machine (`prefect worker start --pool NAME`) from this checkout; a
Kubernetes work pool runs each flow run as a Job from the Flywheel image, with job variables
checked against the pool's job template first (flows/work_pool.py; infra/ has the worker).
Each deployment allows one run at a time
(Prefect's deployment concurrency limit), and the nightly flow itself refuses a second night
while one is running (services/nights.py), so a manual run next to the scheduled one cannot
overlap either.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from prefect import Flow, flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings
from prefect.types.entrypoint import EntrypointType

from flows.rollout import watch_rollouts
from flows.work_pool import flow_run_job, flow_run_template, job_variables
from services.config import KubeSettings, get_settings
from services.kube.validation import ManifestError

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = "flows/nightly.py:nightly"
WATCHER_ENTRYPOINT = "flows/rollout.py:watch_rollouts"
RETENTION_ENTRYPOINT = "flows/retention.py:retention"
# The watcher's deployment: `flywheel deploy` puts it on a work pool, `flywheel rollout watch`
# serves the same deployment itself, so the two never make a second controller.
WATCHER_DEPLOYMENT = "controller"
POOL_TYPES = ("process", "kubernetes")


class DeployError(RuntimeError):
    """The deployment cannot be registered as asked; the message says what to change."""


def require_prefect_server() -> None:
    """Schedules need a Prefect server's scheduler; Prefect's temporary one has none."""
    if get_current_settings().api.url is None:
        raise DeployError(
            "no Prefect server to register with: set PREFECT_API_URL to a running Prefect "
            "server (a deployment on Prefect's temporary local server would vanish with it)"
        )


def deploy_nightly(
    *,
    cron: str,
    timezone: str,
    work_pool: str,
    pool_type: str = "process",
    name: str = "nightly",
) -> UUID:
    """Create or update the nightly deployment (and its work pool); returns its id."""
    _check_pool_type(pool_type)
    require_prefect_server()
    return _deploy(
        ENTRYPOINT,
        name=name,
        schedule=_cron(cron, timezone),
        work_pool=work_pool,
        pool_type=pool_type,
        description="Flywheel's nightly loop: ingest, mine, train, evaluate, gate, roll out.",
    )


def deploy_retention(
    *,
    cron: str,
    timezone: str,
    work_pool: str,
    pool_type: str = "process",
    name: str = "retention",
) -> UUID:
    """Create or update the retention deployment: FLYWHEEL_RETENTION_* applied on a cron."""
    _check_pool_type(pool_type)
    require_prefect_server()
    return _deploy(
        RETENTION_ENTRYPOINT,
        name=name,
        schedule=_cron(cron, timezone),
        work_pool=work_pool,
        pool_type=pool_type,
        description="Flywheel's retention: raw uploads and episodes past their age removed.",
    )


def _cron(cron: str, timezone: str) -> CronSchedule:
    try:
        return CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:
        raise DeployError(f"invalid schedule {cron!r} in {timezone!r}: {exc}") from exc


def deploy_rollout_watcher(
    *,
    interval_s: float,
    work_pool: str,
    pool_type: str = "process",
    name: str = WATCHER_DEPLOYMENT,
) -> UUID:
    """Create or update the rollout watcher's deployment: one controller step per interval."""
    _check_pool_type(pool_type)
    require_prefect_server()
    if interval_s <= 0:
        raise DeployError(f"the watcher's interval must be positive, not {interval_s} s")
    return _deploy(
        WATCHER_ENTRYPOINT,
        name=name,
        schedule=IntervalSchedule(interval=timedelta(seconds=interval_s)),
        work_pool=work_pool,
        pool_type=pool_type,
        description="Flywheel's rollout controller: one decision window per run.",
    )


def serve_rollout_watcher(*, interval_s: float) -> None:
    """Serve the watcher's deployment from this process until it is stopped: the Prefect
    server's scheduler makes a run every ``interval_s`` seconds and this process runs it."""
    require_prefect_server()
    watch_rollouts.serve(
        name=WATCHER_DEPLOYMENT,
        interval=interval_s,
        global_limit=1,
        print_starting_message=False,
        # Found by module, not by a path relative to where the command was started.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def _check_pool_type(pool_type: str) -> None:
    if pool_type not in POOL_TYPES:
        raise DeployError(f"unknown work pool type {pool_type!r}: choose {' or '.join(POOL_TYPES)}")


def _deploy(
    entrypoint: str,
    *,
    name: str,
    schedule,
    work_pool: str,
    pool_type: str,
    description: str,
) -> UUID:
    kube = get_settings().kube
    if pool_type == "kubernetes" and kube.kube_namespace is None:
        raise DeployError(
            "a Kubernetes work pool needs FLYWHEEL_KUBE_NAMESPACE: the namespace Flywheel is "
            "installed in, where the flow runs' Jobs go"
        )
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(work_pool)
        except ObjectNotFound:
            template = flow_run_template() if pool_type == "kubernetes" else {}
            pool = client.create_work_pool(
                WorkPoolCreate(name=work_pool, type=pool_type, base_job_template=template)
            )
        if pool.type != pool_type:
            raise DeployError(
                f"work pool {work_pool!r} exists with type {pool.type}, not {pool_type}"
            )
    common = dict(
        name=name,
        work_pool_name=work_pool,
        schedules=[schedule],
        concurrency_limit=1,
        description=description,
        tags=["flywheel"],
        build=False,
        push=False,
        print_next_steps=False,
    )
    if pool_type == "kubernetes":
        variables = _kubernetes_job_variables(kube, pool.base_job_template, work_pool, name)
        # From the image, found by module: nothing to pull, nothing to build here.
        return _flow_at(entrypoint).deploy(
            job_variables=variables,
            image=variables["image"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            **common,
        )
    remote = flow.from_source(source=str(REPO), entrypoint=entrypoint)
    return remote.deploy(**common)


def _flow_at(entrypoint: str) -> Flow:
    """The flow at ``entrypoint`` ("flows/nightly.py:nightly"), imported only for a Kubernetes
    pool, where the deployment names it by module (the image has flows/ installed): importing
    the nightly flow takes half a minute here, which `flywheel deploy` spares a process pool."""
    path, _, name = entrypoint.partition(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def _kubernetes_job_variables(
    kube: KubeSettings, template: dict, work_pool: str, name: str
) -> dict:
    """The deployment's job variables, once the Job they make passes the Kubernetes schema."""
    variables = job_variables(kube, kube.kube_namespace)
    try:
        flow_run_job(template, variables, name=name)
    except ManifestError as exc:
        raise DeployError(
            f"work pool {work_pool!r} would not run deployment {name!r} as asked: {exc}\n"
            "(a pool Flywheel did not create may lack its job template: see infra/README.md)"
        ) from exc
    return variables
