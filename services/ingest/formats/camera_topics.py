"""A log's camera topics as they stream past: one ``CameraSpool`` per camera, then one track
per episode.

Every log reader that carries cameras (ROS 2 MCAP, ROS 1 and ROS 2 bags, Flywheel's own MCAP
contract) feeds its camera messages here as it streams the log, and asks for the tracks once it
knows the episodes' control steps. A camera message is never held in memory: its payload goes
to the camera's spool on disk (``services/episodes/cameras.py``). A message that cannot be a
frame (undecodable, a format Flywheel does not read) keeps its place in time as an unreadable
frame, so the validation suite names the step it would have shown; it does not lose the log.
A camera topic whose message type is not an image (``CameraInfo``, a depth image's type) is the
mapping's mistake, and refuses the log with a ``LogFormatError`` naming the camera.

The spools are closed by ``close`` whatever happened (the readers call it in ``finally``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.episodes.cameras import (
    CameraSpec,
    CameraSpool,
    CameraTrack,
    FrameError,
    VideoFormat,
    episode_tracks,
)
from services.episodes.model import LogFormatError
from services.ingest.formats import images

CLOCKS = ("log_time", "header")


class CameraTopics:
    """The cameras of one log, by topic: spooled as messages arrive, tracked per episode."""

    def __init__(
        self,
        specs: Sequence[CameraSpec],
        clock: str = "log_time",
        directory: str | Path | None = None,
        video_format: VideoFormat | None = None,
    ) -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, not {clock!r}")
        self.clock = clock
        self.directory = directory
        # How the per-episode tracks are encoded (the store's settings; None: the defaults).
        self.video_format = video_format
        self.spools: dict[str, CameraSpool] = {}
        # Topic -> the message type it carries, once checked.
        self.schemas: dict[str, str] = {}
        for spec in specs:
            self.open(spec)

    def open(self, spec: CameraSpec) -> None:
        """Starts spooling a camera (its topic may still have no message)."""
        if spec.topic not in self.spools:
            self.spools[spec.topic] = CameraSpool(spec, self.directory)

    def __contains__(self, topic: str) -> bool:
        return topic in self.spools

    def check(self, topic: str, schema_name: str | None) -> None:
        """Raises LogFormatError unless the topic's message type is one Flywheel reads as
        frames; the first message on a topic calls this once."""
        if self.schemas.get(topic) == schema_name:
            return
        name = self.spools[topic].spec.name
        try:
            images.check_schema(schema_name or "(no schema)", topic)
        except FrameError as exc:
            raise LogFormatError(f"camera {name}: {exc}") from None
        self.schemas[topic] = schema_name or ""

    def add(self, topic: str, log_time_ns: int, message: Any) -> None:
        """One decoded camera message: its payload to the camera's spool, at the mapping's
        clock (a message without a stamp keeps its log time)."""
        spool = self.spools[topic]
        at = log_time_ns
        try:
            if self.clock == "header":
                stamp = images.stamp_ns(message)
                at = log_time_ns if stamp is None else stamp
            payload = images.payload(message, self.schemas[topic])
        except (FrameError, TypeError, ValueError) as exc:
            spool.add_unreadable(at, str(exc))
            return
        spool.add(at, payload)

    def add_unreadable(self, topic: str, log_time_ns: int, reason: str) -> None:
        """A camera message that its log's decoder could not read (cut short, not its type)."""
        self.spools[topic].add_unreadable(log_time_ns, reason)

    def tracks(self, episodes: list[tuple[np.ndarray, float]]) -> list[dict[str, CameraTrack]]:
        """Per episode (step times in ns on the mapping's clock, control rate), each camera's
        track; on failure, the tracks made so far are discarded."""
        result: list[dict[str, CameraTrack]] = [{} for _ in episodes]
        try:
            for spool in self.spools.values():
                made = episode_tracks(
                    spool, episodes, video_format=self.video_format, directory=self.directory
                )
                for per_episode, track in zip(result, made, strict=True):
                    per_episode[spool.spec.name] = track
        except BaseException:
            for per_episode in result:
                for track in per_episode.values():
                    track.discard()
            raise
        return result

    def close(self) -> None:
        for spool in self.spools.values():
            spool.close()
