"""What the simulated robots' cameras cost: frames/s and shift time, side by side in one run.

1. Frames/s of Meta-World's scene (pick-place, the arm moving) through MuJoCo's offscreen
   renderer, per OpenGL backend (EGL, OSMesa: each in its own process, as MuJoCo fixes its
   backend once), per size: Meta-World's default scene (shadows, reflections, skybox, 4x
   multisampling) against the robots' (all four off), and the ratio.
2. Seconds per episode of the expert on pick-place: without cameras, and with the cameras
   recorded and uploaded as H.264 (render, encode, write the MCAP), at the settings' rate and
   at every control step; the time they add to a shift of the demo's size.

    .venv/bin/python bench/render.py [--frames 30] [--episodes 3] [--px 64 96]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from services.config import FleetSettings
from services.twin.render import BACKENDS, CameraSetup, RenderError, SceneCameras, gl_backend
from services.twin.tasks import make_env
from sim.episode import robot_cameras, run_episode, upload
from sim.operator import Operator

TASK = "pick-place"
# The demo's shift: 4 robots, 12 episodes each (`make demo`), each at most 150 steps.
DEMO_SHIFT_STEPS = 4 * 12 * 150


def frames_per_s(backend: str, px: int, fast: bool, frames: int) -> float:
    """Frames/s of the front and wrist cameras, rendered alternately while the arm moves."""
    gl_backend((backend,))
    env = make_env(TASK)
    state = env.reset(1)
    cameras = SceneCameras(
        env._env.model, env._env.data, env.CAMERAS, ("front", "wrist"), px, fast=fast
    )
    with cameras:
        cameras.render()  # the first frame sets up the context's buffers
        elapsed = 0.0
        for _ in range(frames // 2):
            state = env.step(env.expert_action(state)).state
            start = time.perf_counter()
            cameras.render()
            elapsed += time.perf_counter() - start
    return 2 * (frames // 2) / elapsed


def episode_seconds(setup: CameraSetup | None, episodes: int, folder: Path) -> tuple[float, int]:
    """Seconds and steps of ``episodes`` expert episodes, run and uploaded, with ``setup``'s
    cameras."""
    env = make_env(TASK)
    every = setup.every(env.control_hz) if setup else 1
    started = datetime(2026, 1, 1, tzinfo=UTC)
    with robot_cameras(env, setup) as cameras:
        start, steps = time.perf_counter(), 0
        for seed in range(episodes):
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
                camera_every=every,
            )
            upload(recording, folder / f"{seed}.mcap", setup)
            steps += len(recording.states)
        return time.perf_counter() - start, steps


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
    parser.add_argument("--episodes", type=int, default=3, help="episodes per shift setting")
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
        f"{args.episodes} episodes each; backend {gl_backend()}"
    )
    print(
        f"{'cameras':34} {'s/episode':>10} {'ms/step':>8} {'added':>7}   added per demo shift "
        f"(4 robots x 12 episodes x 150 steps, the most)"
    )
    settings_rows = [
        ("none", None),
        (f"{','.join(names)} {px} px {hz:g} Hz (settings)", CameraSetup(names, px, hz)),
        (f"{','.join(names)} {px} px every step", CameraSetup(names, px, control_hz)),
        (f"front {px} px {hz:g} Hz", CameraSetup(("front",), px, hz)),
    ]
    with tempfile.TemporaryDirectory() as folder:
        base = None
        for label, setup in settings_rows:
            seconds, steps = episode_seconds(setup, args.episodes, Path(folder))
            per_step = seconds / steps
            base = per_step if base is None else base
            added = per_step - base
            print(
                f"{label:34} {seconds / args.episodes:10.2f} {per_step * 1e3:8.2f} "
                f"{added * 1e3:+7.2f}   {added * DEMO_SHIFT_STEPS:+.0f} s"
            )
    print(f"\n(load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
