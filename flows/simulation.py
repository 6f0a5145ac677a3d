"""Days and nights with the simulated fleet: the fleet works a shift, then the nightly flow runs.

Night 0 has no policy yet: the lab records a handful of demonstrations instead, and the
nightly flow trains the first policy from them.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.nightly import nightly
from services import nights
from services.config import get_settings


@task(name="fleet-shift", retries=1, retry_delay_seconds=[5], cache_policy=NO_CACHE)
def fleet_shift(night: int, robots: int, episodes_per_robot: int, lab_demos: int) -> dict:
    """The fleet's working day; before there is any policy, the lab's demonstrations."""
    from pathlib import Path

    from services.rollout.ledger import champion_of
    from services.rollout.robot_api import LocalFleetClient
    from services.store import session_scope
    from sim.fleet import FleetConfig, robot_ids, run_shift
    from sim.lab import record_lab_demos

    settings = get_settings()
    log_dir = Path(settings.fleet_log_uri)
    with session_scope(settings.db_url) as session:
        champion = champion_of(session=session)
    if champion is None:
        paths = record_lab_demos(settings.tasks, lab_demos, log_dir)
        return {"night": night, "lab_demos": len(paths)}
    config = FleetConfig(robots=robots, episodes_per_robot=episodes_per_robot, tasks=settings.tasks)
    client = LocalFleetClient(settings)
    client.register(robot_ids(config), settings.tasks)
    summary = run_shift(config, client, log_dir, night)
    return {"night": night, "shift": summary}


@flow(name="simulated-nights")
def simulate_nights(
    nights_to_run: int = 3, robots: int = 4, episodes_per_robot: int = 8, lab_demos: int = 10
) -> list[dict]:
    reports = []
    first = nights.nights_completed(get_settings())
    for night in range(first, first + nights_to_run):
        fleet_shift(night, robots, episodes_per_robot, lab_demos)
        reports.append(nightly())
    return reports
