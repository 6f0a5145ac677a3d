"""Lab demonstrations: the expert, in the part of the workspace the lab covers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from services.twin.render import CameraSetup
from services.twin.tasks import make_env
from sim.episode import robot_cameras, run_episode, upload
from sim.fleet import EPOCH, LAB_SEEDS, NAMESPACE, SEED_SPAN
from sim.operator import Operator


def record_lab_demos(
    tasks: Sequence[str],
    per_task: int,
    log_dir: Path,
    seed: int = 0,
    cameras: CameraSetup | None = None,
) -> list[Path]:
    """Record ``per_task`` expert demonstrations per task under ``log_dir/lab/``.

    Initial conditions are drawn until they fall inside the lab's part of the workspace, and
    only successful demonstrations are kept (a lab discards its failed takes). The lab's robot
    has the fleet's ``cameras``.
    """
    paths = []
    for task in tasks:
        env = make_env(task)
        every = cameras.every(env.control_hz) if cameras else 1
        candidate = LAB_SEEDS + seed * 100_000
        kept = 0
        with robot_cameras(env, cameras) as rendered:
            while kept < per_task:
                if candidate >= LAB_SEEDS + SEED_SPAN:
                    raise RuntimeError(f"ran out of lab seeds for {task}")
                env.reset(candidate)
                if env.in_lab_workspace():
                    recording = run_episode(
                        env,
                        candidate,
                        policy=None,
                        operator=Operator(operator_id="lab-operator"),
                        robot_id="lab",
                        policy_version=None,
                        started_at=EPOCH,
                        episode_uuid=str(uuid.uuid5(NAMESPACE, f"lab/{task}/{candidate}")),
                        cameras=rendered,
                        camera_every=every,
                    )
                    if recording.outcome == "success":
                        path = log_dir / "lab" / task / f"{recording.episode_uuid}.mcap"
                        paths.append(upload(recording, path, cameras))
                        kept += 1
                candidate += 1
    return paths
