"""The retention flow: raw uploads and episodes older than their configured age are removed.

`flywheel deploy` registers it on a daily cron schedule beside the nightly deployment; it runs
before the night (default 01:00) so that a night never trains on data past its age.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from services.config import Settings, get_settings
from services.curation.retention import RetentionReport, apply_retention


# Deleting is idempotent (tombstones record what must go), so a retry finishes the job.
@task(name="apply-retention", retries=2, retry_delay_seconds=[30, 300], cache_policy=NO_CACHE)
def apply_retention_task(settings: Settings) -> RetentionReport:
    return apply_retention(settings)


@flow(name="apply-retention")
def retention(settings: Settings | None = None) -> RetentionReport:
    """One pass of the retention policy (a no-op while no age is configured).

    ``settings``: None (a scheduled run) reads the environment's at the start.
    """
    return apply_retention_task(settings or get_settings())
