"""Camera tracks of datasets that already hold one frame per step (LeRobot, robomimic).

Such a dataset's frames are decoded arrays, not log messages, so its reader hands them here
one at a time with their times; they go through the same ``CameraSpool`` and
``episode_tracks`` as a log's camera messages, so an imported episode's track is aligned,
judged (``CameraFacts``) and encoded exactly like a recorded one.

The spool holds raw rgb8 payloads: the frames arrive decoded, and compressing them again
(PNG, JPEG) only to decode them once more in ``episode_tracks`` would cost more time than the
disk it saves; the spool holds one episode of one camera at a time and is deleted once its
track is encoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from services.episodes.cameras import (
    CameraSpec,
    CameraSpool,
    CameraTrack,
    FrameError,
    Payload,
    VideoFormat,
    episode_tracks,
)
from services.episodes.model import LogFormatError


def rgb8(pixels: np.ndarray) -> Payload:
    """An (H, W, 3) uint8 RGB array as a raw payload."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise FrameError(f"a frame of shape {pixels.shape} {pixels.dtype}, not (H, W, 3) uint8")
    height, width = pixels.shape[:2]
    return Payload("raw", np.ascontiguousarray(pixels).tobytes(), width, height, "rgb8")


def track(
    spec: CameraSpec,
    frames: Iterable[tuple[int, np.ndarray | Payload | FrameError]],
    step_times_ns: np.ndarray,
    control_hz: float,
    directory: str | Path | None = None,
    video_format: VideoFormat | None = None,
) -> CameraTrack:
    """One episode's track of one camera from (time in ns, frame) pairs in time order.

    A frame is an RGB array, an already encoded payload (a PNG or JPEG image), or why the
    dataset holds no frame there (it keeps its step, for validation to name). Raises what
    ``frames`` raises (a missing or unreadable file: a LogFormatError naming the camera).
    """
    spool = CameraSpool(spec, directory)
    try:
        for time_ns, frame in frames:
            try:
                if isinstance(frame, FrameError):
                    raise frame
                spool.add(time_ns, frame if isinstance(frame, Payload) else rgb8(frame))
            except FrameError as exc:
                spool.add_unreadable(time_ns, str(exc))
        [result] = episode_tracks(
            spool, [(step_times_ns, control_hz)], video_format=video_format, directory=directory
        )
    finally:
        spool.close()
    return result


def discard(tracks: Mapping[str, CameraTrack]) -> None:
    """Removes the tracks' files: their episode is an error, or was not kept."""
    for camera in tracks.values():
        camera.discard()


def camera_error(episode: str, camera: str, why: str) -> LogFormatError:
    return LogFormatError(f"{episode}: camera {camera}: {why}")
