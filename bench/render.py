"""What the simulated robots' cameras cost: frames/s and shift time, side by side in one run.

1. Frames/s of Meta-World's scene (pick-place, the arm moving) through MuJoCo's offscreen
   renderer, per OpenGL backend (EGL, OSMesa: each in its own process, as MuJoCo fixes its
   backend once), per size: Meta-World's default scene (shadows, reflections, skybox, 4x
   multisampling) against the robots' (all four off), and the ratio; the median frame.
2. Milliseconds per control step of the expert on pick-place: without cameras, and with the
   cameras recorded and uploaded as H.264 (render, encode, write the MCAP), at the settings'
   rate and at every control step; the time they add to a shift of the demo's size. The
   settings take turns episode by episode; the median episode of each counts.

    .venv/bin/python bench/render.py [--frames 30] [--episodes 5] [--px 64 96]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.config import FleetSettings
from services.twin.render import BACKENDS, CameraSetup, RenderError, SceneCameras, gl_backend
from services.twin.tasks import make_env
from sim.episode import robot_cameras, run_episode, upload
from sim.operator import Operator

TASK = "pick-place"
# The demo's shift: 4 robots, 12 episodes each (`make demo`), each at most 150 steps.
DEMO_SHIFT_STEPS = 4 * 12 * 150


def frames_per_s(backend: str, px: int, fast: bool, frames: int) -> float:
    """Frames/s of the front and wrist cameras, rendered alternately while the arm moves (the
    median frame's time: a busy machine's stalls do not count)."""
    gl_backend((backend,))
    env = make_env(TASK)
    state = env.reset(1)
    cameras = SceneCameras(
        env._env.model, env._env.data, env.CAMERAS, ("front", "wrist"), px, fast=fast
    )
    with cameras:
        cameras.render()  # the first frame sets up the context's buffers
        times = []
        for _ in range(frames // 2):
            state = env.step(env.expert_action(state)).state
            start = time.perf_counter()
            cameras.render()
            times.append((time.perf_counter() - start) / 2)
    return 1.0 / float(np.median(times))


def shift_costs(setups: dict[str, CameraSetup | None], episodes: int, folder: Path) -> dict:
    """Milliseconds per control step of expert episodes, run and uploaded, with each setup's
    cameras: the settings take turns episode by episode, and each gets the median of its
    episodes, so that a busy machine's stalls fall on all alike and count for none."""
    started = datetime(2026, 1, 1, tzinfo=UTC)
    per_step: dict[str, list[float]] = {label: [] for label in setups}
    with contextlib.ExitStack() as stack:
        worlds = {}
        for label, setup in setups.items():
            env = make_env(TASK)
            worlds[label] = (env, stack.enter_context(robot_cameras(env, setup)), setup)
        for seed in range(episodes):
            for label, (env, cameras, setup) in worlds.items():
                start = time.perf_counter()
                recording = run_episode(
                    env,
                    seed,
                    policy=None,
                    operator=Operator(operator_id="bench"),
                    robot_id="bench",
                    policy_version=None,
                    started_at=started,
                    episode_uuid=f"bench-{seed}",
                    cameras=cameras,
                    camera_every=setup.every(env.control_hz) if setup else 1,
                )
                upload(recording, folder / f"{seed}.mcap", setup)
                seconds = time.perf_counter() - start
                per_step[label].append(seconds * 1e3 / len(recording.states))
    return {label: float(np.median(values)) for label, values in per_step.items()}


def child(args: argparse.Namespace) -> None:
    """One backend's frames/s, printed as JSON (run in its own process)."""
    try:
        rows = [
            {"px": px, "fast": fast, "fps": frames_per_s(args.backend, px, fast, args.frames)}
            for px in args.px
            for fast in (False, True)
        ]
    except RenderError as exc:
        rows = [{"error": str(exc)}]
    print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=30, help="frames per measurement")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per camera setting")
    parser.add_argument("--px", type=int, nargs="+", default=[64, 96])
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend:
        return child(args)

    print(f"1. frames/s, {TASK}, front and wrist cameras alternately, the arm moving")
    print(f"{'backend':8} {'px':>4} {'default':>9} {'no extras':>10} {'ratio':>6}")
    for backend in BACKENDS:
        out = subprocess.run(
            [sys.executable, __file__, "--backend", backend, "--frames", str(args.frames)]
            + ["--px", *map(str, args.px)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"{backend:8} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        rows = json.loads(out.stdout.strip().splitlines()[-1])
        if "error" in rows[0]:
            print(f"{backend:8} {rows[0]['error']}")
            continue
        for px in args.px:
            default, fast = (
                next(r["fps"] for r in rows if r["px"] == px and r["fast"] is f)
                for f in (False, True)
            )
            print(f"{backend:8} {px:4d} {default:9.1f} {fast:10.1f} {fast / default:5.1f}x")

    settings = FleetSettings()
    names = settings.sim_cameras or ("front", "wrist")
    px, hz = settings.sim_camera_px, settings.sim_camera_hz
    control_hz = make_env(TASK).control_hz
    print(
        f"\n2. expert episodes of {TASK} ({control_hz:.0f} Hz control), run and uploaded; "
        f"median of {args.episodes} episodes each, taking turns; backend {gl_backend()}"
    )
    print(
        f"{'cameras':34} {'ms/step':>8} {'added':>7}   added per demo shift "
        f"(4 robots x 12 episodes x 150 steps, the most)"
    )
    setups = {
        "none": None,
        f"{','.join(names)} {px} px {hz:g} Hz (settings)": CameraSetup(names, px, hz),
        f"{','.join(names)} {px} px every step": CameraSetup(names, px, control_hz),
        f"front {px} px {hz:g} Hz": CameraSetup(("front",), px, hz),
    }
    with tempfile.TemporaryDirectory() as folder:
        costs = shift_costs(setups, args.episodes, Path(folder))
    for label, ms in costs.items():
        added = ms - costs["none"]
        print(f"{label:34} {ms:8.2f} {added:+7.2f}   {added * DEMO_SHIFT_STEPS / 1e3:+.0f} s")
    print(f"\n(load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
