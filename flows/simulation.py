"""Days and nights with the simulated fleet: the fleet works a shift, then the nightly flow runs.

Night 0 has no policy yet: the lab records a handful of demonstrations instead, and the
nightly flow trains the first policy from them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.nightly import nightly
from flows.progress import TASK_HOOKS
from services import nights
from services.api.server import api_in_background
from services.config import Settings
from services.episodes.cameras import VideoFormat
from services.policy_server.models import ModelUnavailable, load_served_model
from services.registry.ledger import champion_of
from services.rollout.controller import step_rollout
from services.run_settings import load_run_settings
from services.serving.credentials import issue_fleet_credentials
from services.shadow.runs import running_shadow
from services.shadow.tap import ShadowTap
from services.store import session_scope
from services.twin.render import CameraSetup
from sim.fleet import FleetConfig, robot_ids, run_shift
from sim.lab import record_lab_demos
from sim.robot_client import ApiFleetClient

log = logging.getLogger(__name__)
# Who the audit log says enrolled the simulated robots and rotated their credentials.
FLEET_ADMIN = "simulated fleet"


@task(name="fleet-shift", retries=1, retry_delay_seconds=[5], cache_policy=NO_CACHE, **TASK_HOOKS)
def fleet_shift(
    settings: Settings, night: int, robots: int, episodes_per_robot: int, lab_demos: int
) -> dict:
    """The fleet's working day; before there is any policy, the lab's demonstrations.

    The robots talk to Flywheel over HTTP, to the API served on a free local port for the
    shift, and the rollout controller looks at their heartbeats between windows of the shift.
    """
    log_dir = Path(settings.fleet_log_uri)
    with session_scope(settings.db_url) as session:
        champion = champion_of(session=session)
    if champion is None:
        paths = record_lab_demos(
            settings.fleet.tasks,
            lab_demos,
            log_dir,
            seed=settings.fleet.sim_seed,
            cameras=CameraSetup.from_settings(settings.fleet),
        )
        return {"night": night, "lab_demos": len(paths)}
    config = FleetConfig(
        robots=robots,
        episodes_per_robot=episodes_per_robot,
        tasks=settings.fleet.shift_tasks,
        seed=settings.fleet.sim_seed,
        cameras=CameraSetup.from_settings(settings.fleet),
        video_format=VideoFormat.from_settings(settings.video),
    )
    with session_scope(settings.db_url, write=True) as session:
        # The simulated robots keep no credentials between shifts: each shift has fresh ones.
        credentials = issue_fleet_credentials(
            session=session, robot_ids=robot_ids(config), tasks=config.tasks, actor=FLEET_ADMIN
        )
    windows = []

    def controller_looks() -> None:
        window = step_rollout(settings)
        if window is not None:
            windows.append(window)

    shadow = _shadow_tap(settings)
    try:
        with (
            api_in_background() as base_url,
            httpx.Client(base_url=base_url, timeout=60) as http,
        ):
            client = ApiFleetClient(http, settings.root / "robot-models", credentials)
            summary = run_shift(
                config, client, log_dir, night, after_window=controller_looks, shadow=shadow
            )
    finally:
        shadow_counts = shadow.close() if shadow is not None else None
    report = {"night": night, "shift": summary, "rollout_windows": windows}
    if shadow is not None:
        report["shadow"] = {"version": shadow.version, **shadow_counts}
    return report


def _shadow_tap(settings: Settings) -> ShadowTap | None:
    """The shadow the policy server would run beside the robots tonight, if one is running.

    The simulated robots run their models on board instead of calling a policy server, so
    the shift runs the shadow as the server does (the same ShadowTap, model loaded and
    checked the same way) and its log lands where the server's would.
    """
    with session_scope(settings.db_url) as session:
        run = running_shadow(session=session)
        version = run.version if run is not None else None
    if version is None:
        return None
    try:
        model = load_served_model(settings, version, warmup_calls=1)
    except ModelUnavailable as exc:  # as the server does: the robots work on, unshadowed
        log.error("the shift runs without its shadow: %s", exc)
        return None
    return ShadowTap(
        version,
        model.act,
        settings.shadow_log,
        queue_steps=settings.shadow.queue_steps,
    )


@flow(name="simulated-nights")
def simulate_nights(
    nights_to_run: int = 3,
    robots: int = 4,
    episodes_per_robot: int = 8,
    lab_demos: int = 10,
    settings: Settings | None = None,
) -> list[dict]:
    """Shifts and nights with ``settings`` (None: the environment's, read now)."""
    settings = settings or load_run_settings()
    reports = []
    first = nights.nights_completed(settings)
    for night in range(first, first + nights_to_run):
        fleet_shift(settings, night, robots, episodes_per_robot, lab_demos)
        reports.append(nightly(settings))
    return reports
