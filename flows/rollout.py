"""The rollout watcher: one look of the rollout controller at the fleet's heartbeats per run,
then one pass of the notifications owed to the webhook (services/notify).

`flywheel deploy` registers it on an interval schedule beside the nightly cron deployment;
`flywheel rollout watch` serves it on its interval from one long-running process.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from services.config import Settings, get_settings
from services.notify.courier import deliver_pending
from services.rollout.controller import step_rollout


# No retries: the next scheduled run is the retry, with the heartbeats that arrived since.
@task(name="step-rollout", cache_policy=NO_CACHE)
def step_rollout_task(settings: Settings) -> dict | None:
    return step_rollout(settings)


# No retries: a notification not delivered stays owed, for the next run's pass.
@task(name="notify", cache_policy=NO_CACHE)
def notify_task(settings: Settings) -> None:
    """One delivery pass: tells the webhook of this window's rollback, halt or pause, and of
    whatever else is owed. It never sleeps: a failed attempt ends it (services/notify)."""
    deliver_pending(settings)


@flow(name="watch-rollouts")
def watch_rollouts(settings: Settings | None = None) -> dict | None:
    """One decision window of the rollout in progress (None when there is none).

    ``settings``: None (a scheduled run) reads the environment's at the start.
    """
    settings = settings or get_settings()
    window = step_rollout_task(settings)
    notify_task(settings)
    return window
