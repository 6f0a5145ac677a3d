"""Train and serve see the same pixels: a vision policy's frames in the twin against the frames
training reads from the store (issue 20).

    .venv/bin/python bench/vision_pixels.py [--episodes 4] [--px 64]

The simulated fleet records pick-place episodes with its cameras (``sim.episode``), uploads
them as a robot does (MCAP, H.264) and Flywheel ingests them (``ingest_logs``: decoded and
encoded again into the store's video). Training reads each step's frame decoded from that
video. For the same steps this compares, with the stored frame:

- raw: the frame as rendered (what evaluation gave a policy before the codec pass);
- upload only: the frame through the robot's upload encode alone;
- codec pass: the frame through ``services.twin.eyes.PolicyEyes``, which the simulated robots
  and closed-loop evaluation now use for a policy trained on decoded frames (the robot's
  upload encode, then the store's, each streamed with zero latency).

Printed per camera: mean absolute difference in pixel values (0-255) and PSNR in dB (higher
is closer; identical frames give infinity). The codec pass cannot be bit-exact: the store's
encoder may reorder frames, a streamed one cannot.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK = "pick-place"
WAYS = ("raw", "upload only", "codec pass")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--px", type=int, default=64)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="flywheel-vision-pixels-"))
    os.environ.update(
        FLYWHEEL_HOME=str(home),
        FLYWHEEL_TASKS=f'["{TASK}"]',
        MLFLOW_DISABLE_TELEMETRY="true",
        FLYWHEEL_HOLDOUT_SHARE="0",
    )
    from policies.images import CameraInput
    from services.config import Settings
    from services.episode_store.camera_index import CameraIndex
    from services.episode_store.frames import FrameReader
    from services.episode_store.parquet import EpisodeStore
    from services.episodes.cameras import VideoFormat
    from services.episodes.codec_pass import CodecPass
    from services.features import EPISODE_INDEX, FRAME_INDEX, IMAGE_PREFIX
    from services.ingest.batch import ingest_logs
    from services.store import migrate, session_scope
    from services.store.models import Episode
    from services.twin.eyes import PolicyEyes
    from services.twin.render import CameraSetup
    from services.twin.tasks import make_env
    from sim.episode import robot_cameras, run_episode, upload
    from sim.operator import Operator, OperatorConfig

    settings = Settings()
    migrate(settings.db_url)
    setup = CameraSetup(("front", "wrist"), px=args.px, hz=settings.fleet.sim_camera_hz)
    video_format = VideoFormat.from_settings(settings.video)
    env = make_env(TASK)
    every = setup.every(env.control_hz)
    # What each step's policy saw, per way of seeing: episode uuid -> way -> camera -> frames.
    seen: dict[str, dict[str, dict[str, list[np.ndarray]]]] = {}
    logs = home / "fleet-logs"
    with robot_cameras(env, setup) as cameras:
        for e in range(args.episodes):
            episode_uuid = str(uuid.uuid4())
            recording = run_episode(
                env,
                30_000_000 + e,
                policy=None,
                operator=Operator(OperatorConfig()),
                robot_id="robot-00",
                policy_version=None,
                started_at=datetime(2026, 1, 1, 8, e, tzinfo=UTC),
                episode_uuid=episode_uuid,
                cameras=cameras,
                camera_every=every,
            )
            upload(recording, logs / f"{episode_uuid}.mcap", setup)
            # The frames the episode recorded, shown to the policy's eyes step by step.
            eyes = PolicyEyes(
                tuple(CameraInput(n, args.px, args.px, "h264") for n in setup.names),
                setup,
                env.control_hz,
                video_format,
            )
            taken = {name: dict(f) for name, f in recording.camera_frames.items()}
            uploads = {n: CodecPass(video_format, setup.hz, env.control_hz) for n in setup.names}
            ways = {way: {n: [] for n in setup.names} for way in WAYS}
            held, uploaded = {}, {}
            for step in range(len(recording.states)):
                t = step / env.control_hz
                rendered = {n: taken[n][t] for n in setup.names} if step % every == 0 else None
                if rendered is not None:
                    held = rendered
                    uploaded = {n: uploads[n].upload(f) for n, f in rendered.items()}
                for name, frame in eyes.see(rendered).items():
                    ways["codec pass"][name].append(frame)
                    ways["upload only"][name].append(uploaded[name])
                    ways["raw"][name].append(held[name])
            seen[episode_uuid] = ways
    summary = ingest_logs(settings, source=str(logs))
    print(f"{summary.ingested} of {args.episodes} episodes recorded and ingested")

    store = EpisodeStore(settings.episode_store)
    with session_scope(settings.db_url) as session:
        ids = {e.source_episode_uuid: e.id for e in session.query(Episode)}
    index = CameraIndex(store, list(ids.values()), "bench episodes")
    differences = {(way, n): [] for way in WAYS for n in setup.names}
    with FrameReader(store.root) as reader:
        for episode_uuid, ways in seen.items():
            steps = store.read_frames([ids[episode_uuid]]).sort_values(FRAME_INDEX)
            for name in setup.names:
                stored = reader.frames(
                    IMAGE_PREFIX + name,
                    index.locate(
                        name, steps[EPISODE_INDEX].to_numpy(), steps[FRAME_INDEX].to_numpy()
                    ),
                )
                for way, frames in ways.items():
                    differences[(way, name)].append((np.stack(frames[name]), stored))

    print(f"\n{TASK}, {args.px} px, {len(seen)} episodes; each step's frame against the stored one")
    print(f"{'camera':<8} {'frames':>7} {'way':<11} {'mean |diff|':>12} {'PSNR dB':>8}")
    for (way, name), pairs in sorted(differences.items(), key=lambda kv: kv[0][1]):
        ours = np.concatenate([p[0] for p in pairs])
        stored = np.concatenate([p[1] for p in pairs])
        mad = float(np.abs(ours.astype(np.int16) - stored.astype(np.int16)).mean())
        print(f"{name:<8} {len(ours):>7} {way:<11} {mad:>12.3f} {_psnr(ours, stored):>8.2f}")


if __name__ == "__main__":
    main()
