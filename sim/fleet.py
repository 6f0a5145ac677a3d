"""A simulated fleet: robots that ask Flywheel which policy to run, work, and upload logs.

The fleet talks to Flywheel only the way real robots do: it asks for its assignment through
a client, and uploads one MCAP file per episode into the fleet log store.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np

from services.episodes.cameras import VideoFormat
from services.twin.env import PolicyFn, SimEnv
from services.twin.eyes import PolicyEyes
from services.twin.render import CameraSetup, SceneCameras
from services.twin.tasks import make_env
from sim.episode import Shadow, robot_cameras, run_episode, upload
from sim.operator import Operator, OperatorConfig

# Seed ranges kept apart: evaluation uses 0..9_999_999, the fleet and the lab their own.
FLEET_SEEDS = 10_000_000
LAB_SEEDS = 20_000_000
SEED_SPAN = 10_000_000
# Simulated days start here, so re-running a shift writes byte-identical files.
EPOCH = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
NAMESPACE = uuid.UUID("6f6c7966-6c79-7768-6565-6c2d666c6565")


@dataclass(frozen=True)
class Assignment:
    # Model version the robot should run; None: no policy yet.
    version: str | None
    policy: PolicyFn | None
    # The cameras a vision policy reads (policies.images.CameraInput); () for a state policy.
    cameras: tuple = ()
    # A fresh actor per episode (ACT's temporal ensembling keeps the episode's chunks);
    # None: ``policy`` acts alone.
    episode: Callable[[], PolicyFn] | None = None


class FleetClient(Protocol):
    def assignment(self, robot_id: str) -> Assignment: ...

    def heartbeat(
        self,
        robot_id: str,
        version: str | None,
        *,
        heartbeat_id: str,
        episodes: int,
        failures: int,
        interventions: int,
        active_seconds: float,
    ) -> None: ...


@dataclass(frozen=True)
class FleetConfig:
    # Number of robots.
    robots: int = 4
    # Episodes each robot works per shift.
    episodes_per_robot: int = 8
    # Tasks the robots work, round-robin over robots and episodes.
    tasks: tuple[str, ...] = ("pick-place",)
    # Seeds every episode's initial conditions (with night, robot and episode index).
    seed: int = 0
    # How the operators watching the robots behave.
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    # Rounds (one episode per robot) between two looks of the rollout controller.
    window_rounds: int = 4
    # The cameras every robot records (None: none).
    cameras: CameraSetup | None = None
    # How the store encodes camera tracks: a vision policy trained on decoded frames sees
    # its cameras through the same codecs (services.twin.eyes).
    video_format: VideoFormat = field(default_factory=VideoFormat)

    def __post_init__(self) -> None:
        if self.window_rounds < 1:
            raise ValueError("window_rounds must be at least 1")
        if self.robots < 1 or self.episodes_per_robot < 1:
            raise ValueError("a fleet needs at least one robot working at least one episode")
        if not self.tasks:
            raise ValueError("a fleet needs at least one task")


@dataclass(frozen=True)
class ShiftSummary:
    night: int
    episodes: int
    autonomous_successes: int
    successes: int
    interventions: int
    operator_steps: int
    steps: int
    idle_robots: tuple[str, ...]
    files: tuple[str, ...]


def robot_ids(config: FleetConfig) -> list[str]:
    return [f"robot-{i:02d}" for i in range(config.robots)]


def episode_seed(base: int, *parts: int) -> int:
    return base + int(np.random.SeedSequence(list(parts)).generate_state(1)[0]) % SEED_SPAN


def _episode_uuid(robot: str, night: int, episode: int, seed: int, version: str | None) -> str:
    # Deterministic: the same shift re-run uploads the same files (ingest is by content).
    return str(uuid.uuid5(NAMESPACE, f"{robot}/{night}/{episode}/{seed}/{version}"))


def run_shift(
    config: FleetConfig,
    client: FleetClient,
    log_dir: Path,
    night: int,
    *,
    after_window: Callable[[], None] | None = None,
    shadow: Shadow | None = None,
) -> ShiftSummary:
    """A shift in rounds: each robot asks for its assignment, works one episode, uploads its
    log and sends a heartbeat; ``after_window`` runs every ``window_rounds`` rounds (the
    rollout controller looking at the heartbeats), so a stage change or a rollback reaches
    the robots within the shift. ``shadow``: a candidate run beside what each robot runs
    (not beside itself, on a robot already running it), as the policy server runs one."""
    envs = {task: make_env(task) for task in config.tasks}
    with contextlib.ExitStack() as stack:
        cameras = {
            task: stack.enter_context(robot_cameras(env, config.cameras))
            for task, env in envs.items()
        }
        return _work(config, client, log_dir, night, envs, cameras, after_window, shadow)


def _eyes(assignment: Assignment, config: FleetConfig, env: SimEnv) -> PolicyEyes | None:
    """A vision policy's view of the robot's cameras for one episode; None for a state one."""
    if not assignment.cameras:
        return None
    if config.cameras is None:
        raise ValueError(
            f"model {assignment.version} is a vision policy and the robots record no cameras "
            "(FLYWHEEL_SIM_CAMERAS is empty)"
        )
    return PolicyEyes(assignment.cameras, config.cameras, env.control_hz, config.video_format)


def _work(
    config: FleetConfig,
    client: FleetClient,
    log_dir: Path,
    night: int,
    envs: dict[str, SimEnv],
    cameras: dict[str, SceneCameras | None],
    after_window: Callable[[], None] | None,
    shadow: Shadow | None = None,
) -> ShiftSummary:
    """The shift's rounds, with each task's world and its robots' cameras open."""
    operator = Operator(config.operator)
    counts = dict(episodes=0, autonomous=0, successes=0, interventions=0, operator=0, steps=0)
    idle, files = set(), []
    for e in range(config.episodes_per_robot):
        for r, robot in enumerate(robot_ids(config)):
            assignment = client.assignment(robot)
            if assignment.policy is None:
                idle.add(robot)
                continue
            task = config.tasks[(r + e) % len(config.tasks)]
            seed = episode_seed(FLEET_SEEDS, config.seed, night, r, e)
            recording = run_episode(
                envs[task],
                seed,
                policy=assignment.episode() if assignment.episode else assignment.policy,
                operator=operator,
                robot_id=robot,
                policy_version=assignment.version,
                started_at=EPOCH + timedelta(days=night, minutes=10 * e),
                episode_uuid=_episode_uuid(robot, night, e, seed, assignment.version),
                cameras=cameras[task],
                camera_every=config.cameras.every(envs[task].control_hz) if config.cameras else 1,
                eyes=_eyes(assignment, config, envs[task]),
                shadow=shadow if shadow and shadow.version != assignment.version else None,
            )
            path = log_dir / robot / f"night-{night:03d}" / f"{recording.episode_uuid}.mcap"
            files.append(str(upload(recording, path, config.cameras)))
            client.heartbeat(
                robot,
                assignment.version,
                # One heartbeat per episode, keyed by it: a shift run again (a retried task)
                # reports the same heartbeats, which the server counts once.
                heartbeat_id=recording.episode_uuid,
                episodes=1,
                # not completed on its own: it failed, or the operator had to step in
                failures=int(recording.outcome != "success" or bool(recording.interventions)),
                interventions=len(recording.interventions),
                active_seconds=len(recording.states) / recording.control_hz,
            )
            operator_steps = sum(s == "operator" for s in recording.control_source)
            counts["episodes"] += 1
            counts["successes"] += recording.outcome == "success"
            counts["autonomous"] += recording.outcome == "success" and not recording.interventions
            counts["interventions"] += len(recording.interventions)
            counts["operator"] += operator_steps
            counts["steps"] += len(recording.states)
        if after_window is not None and (e + 1) % config.window_rounds == 0:
            after_window()
    return ShiftSummary(
        night=night,
        episodes=counts["episodes"],
        autonomous_successes=counts["autonomous"],
        successes=counts["successes"],
        interventions=counts["interventions"],
        operator_steps=counts["operator"],
        steps=counts["steps"],
        idle_robots=tuple(sorted(idle)),
        files=tuple(files),
    )
