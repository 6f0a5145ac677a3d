"""Videos of the evaluation episodes a reviewer is shown: a candidate's first failures and
the champion's episodes on the same seeds.

Evaluation films nothing (a vision policy's own cameras aside): rendering a reviewer's view
of every episode would cost more than the episodes themselves, and a reviewer opens only a
few. Episodes are seeded and deterministic, so after the evaluation the shown ones are run
again with a camera on, each checked against the stored outcome and step count (a video of a
different episode would mislead), and written beside their trajectories; a vision policy
sees through its own cameras then as it did in the evaluation. That is done once, in the
evaluate stage, never by the web app: the pages only serve files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from sqlalchemy import select

from services.config import Settings
from services.episodes.cameras import VideoFormat
from services.evaluation.closed_loop import SUITE, TaskEvaluation, View
from services.evaluation.trajectories import FILMED_FAILURES, VIDEO_FPS, video_path
from services.store import session_scope
from services.store.models import EvaluationEpisode
from services.twin.autonomous import run_autonomous
from services.twin.eyes import policy_cameras
from services.twin.render import RenderError
from services.twin.tasks import make_env

log = logging.getLogger(__name__)

# The camera filmed and its size: the robot's front view, small enough to render on a CPU.
CAMERA = "front"
PX = 96


def filmed_episodes(evaluations: Sequence[TaskEvaluation]) -> list[tuple[str, int]]:
    """The (task, seed) episodes to film: the candidate's first failures in (task, seed) order."""
    failed = sorted((e.task, seed) for e in evaluations for seed in e.failed_seeds)
    return failed[:FILMED_FAILURES]


def film_episodes(
    settings: Settings, version: str, checkpoint: Path, episodes: Sequence[tuple[str, int]]
) -> list[Path]:
    """Run ``version``'s stored evaluation episodes again with a camera and write their
    videos; returns the videos written. Episodes already filmed are skipped; a task whose
    robot has no camera, or a machine that cannot render, films nothing (logged)."""
    from policies.checkpoint import load_checkpoint  # torch, which the API does not need

    with session_scope(settings.db_url) as session:
        stored = {
            (r.task, r.seed): (r.success, r.steps)
            for r in session.scalars(
                select(EvaluationEpisode).where(
                    EvaluationEpisode.model_version == version, EvaluationEpisode.suite == SUITE
                )
            )
        }
    todo = [
        (task, seed)
        for task, seed in episodes
        if (task, seed) in stored and not video_path(settings, SUITE, version, task, seed).exists()
    ]
    if not todo:
        return []
    policy = load_checkpoint(checkpoint)
    view = View.from_settings(settings)
    written = []
    for task in sorted({t for t, _ in todo}):
        env = make_env(task)
        try:
            cameras = env.open_cameras((CAMERA,), PX)
        except (ValueError, RenderError) as exc:
            log.warning("evaluation videos of %s not recorded: %s", task, exc)
            continue
        sight = policy_cameras(env, policy.cameras, view.cameras, view.video_format)
        with cameras, sight as start_look:
            for seed in (s for t, s in todo if t == task):
                frames: list[np.ndarray] = []

                def film(frames=frames, cameras=cameras) -> None:
                    frames.append(cameras.render()[CAMERA])

                result = run_autonomous(
                    env, seed, policy.start_episode(), before_step=film, look=start_look()
                )
                if (result.success, result.steps) != stored[(task, seed)]:
                    log.warning(
                        "v%s on %s seed %d ran differently with the camera on (%s in %d steps, "
                        "stored %s in %d): no video",
                        version,
                        task,
                        seed,
                        result.success,
                        result.steps,
                        *stored[(task, seed)],
                    )
                    continue
                path = video_path(settings, SUITE, version, task, seed)
                write_video(path, frames)
                written.append(path)
    return written


def write_video(path: Path, frames: Sequence[np.ndarray], fmt: VideoFormat = VideoFormat()) -> None:
    """RGB frames as an MP4 at VIDEO_FPS, in the store's codec (written under a temporary
    name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    height, width = frames[0].shape[:2]
    with av.open(str(partial), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream(fmt.codec, rate=VIDEO_FPS, options=fmt.options())
        stream.width, stream.height, stream.pix_fmt = width, height, fmt.pix_fmt
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, VIDEO_FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    partial.replace(path)
