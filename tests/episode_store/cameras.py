"""Episodes with cameras for the store's tests: real tracks from the core's ``episode_tracks``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from services.episodes.cameras import (
    CameraSpec,
    CameraSpool,
    CameraTrack,
    Payload,
    VideoFormat,
    episode_tracks,
)
from services.episodes.model import RawEpisode
from tests.ingest.logs import recording

HZ = 10.0
WIDTH, HEIGHT = 64, 48


def frame(seed: int, step: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """A picture that says which episode (its colour) and which step (a bright block's place)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = 30 + (seed * 67) % 200
    pixels[..., 2] = 30 + (seed * 31) % 200
    row, column = divmod(step % 12, 4)
    pixels[row * 16 : row * 16 + 16, column * 16 : column * 16 + 16, 1] = 255
    return pixels


def camera_tracks(
    seed: int,
    steps: int,
    directory: Path,
    *,
    cameras: tuple[str, ...] = ("front",),
    width: int = WIDTH,
    height: int = HEIGHT,
    video_format: VideoFormat | None = None,
) -> dict[str, CameraTrack]:
    """Camera tracks showing ``frame(seed, step)`` (camera k: seed + 100 k), one per step."""
    ticks = np.arange(steps, dtype=np.int64) * int(1e9 / HZ)
    tracks = {}
    for k, name in enumerate(cameras):
        spool = CameraSpool(CameraSpec(name, f"/camera/{name}"), directory)
        for step, tick in enumerate(ticks):
            pixels = frame(seed + 100 * k, step, width, height)
            spool.add(int(tick), Payload("raw", pixels.tobytes(), width, height, "rgb8"))
        (tracks[name],) = episode_tracks(
            spool, [(ticks, HZ)], directory=directory, video_format=video_format
        )
        spool.close()
    return tracks


def camera_episode(seed: int, steps: int, directory: Path, **cameras) -> RawEpisode:
    """A RawEpisode at ``HZ`` whose cameras are ``camera_tracks(seed, steps, ...)``."""
    base = recording(
        n=steps,
        robot_id=f"robot-{seed:02d}",
        control_hz=HZ,
        control_source=["policy"] * steps,
        reasons=[None] * steps,
        interventions=[],
    )
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    tracks = camera_tracks(seed, steps, directory, **cameras)
    return RawEpisode(**fields, timestamps=np.arange(steps) / HZ, cameras=tracks)


def closest(pixels: np.ndarray, candidates: dict) -> object:
    """Which candidate picture ``pixels`` (decoded, lossy) is nearest to."""
    return min(candidates, key=lambda k: np.abs(candidates[k].astype(float) - pixels).mean())
