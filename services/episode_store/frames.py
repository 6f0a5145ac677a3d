"""Camera frames of sampled steps, decoded from the store's video files for training.

The store keeps each camera as MP4 files packed with many episodes, the LeRobot v3.0 way
(``videos/<key>/chunk-CCC/file-NNN.mp4``); meta/episodes says where each episode lies in its
file (``videos/<key>/from_timestamp``) and frame i of an episode is at
``from_timestamp + i / fps``. Training samples steps at random, it does not play videos, so a
frame is read by seeking to the keyframe at or before it and decoding forward to it: with a
keyframe every few frames (``VideoFormat.gop``) that is a handful of frames per sample.

``FrameReader`` is what a training worker holds: it keeps its files open (a few, the most
recently used) with an index of each file's frames and keyframes, and decodes a batch of
requests file by file in time order, so that samples in the same group of pictures share one
seek and one pass of the decoder. It is picklable: a DataLoader worker, forked or spawned,
opens its own files (a container is never shared between processes). ``bench/camera_loader.py``
measures it against PyAV decoding the same frames by itself.
"""

from __future__ import annotations

import bisect
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa

from services.episode_store.videos import VIDEO_PATH

# (chunk_index, file_index) of one video file of a camera, as meta/episodes names it.
VideoFile = tuple[int, int]
# A requested time may differ from its frame's by this share of the frame period (float
# rounding of from_timestamp + i / fps); further off, the request names no frame.
TOLERANCE = 0.25


class FrameRequestError(ValueError):
    """A request that names no frame of the file; the message says which file and why."""


def video_path(key: str, file: VideoFile) -> str:
    """The file's path relative to the store root."""
    chunk_index, file_index = file
    return VIDEO_PATH.format(video_key=key, chunk_index=chunk_index, file_index=file_index)


def locate(
    episodes: pa.Table, key: str, episode_index: np.ndarray, frame_index: np.ndarray, fps: float
) -> list[tuple[VideoFile, float]]:
    """(file, timestamp) of each (episode, frame) step, from meta/episodes' rows for camera
    ``key``; ``fps`` is the camera's rate (info.json ``features[key].info["video.fps"]``)."""
    columns = [f"videos/{key}/{name}" for name in ("chunk_index", "file_index", "from_timestamp")]
    missing = [c for c in columns if c not in episodes.column_names]
    if missing:
        raise FrameRequestError(f"meta/episodes has no column {missing[0]!r}: no camera {key!r}")
    known = episodes["episode_index"].to_numpy()
    wanted = np.asarray(episode_index, dtype=np.int64)
    if not len(known):
        raise FrameRequestError("meta/episodes has no episodes")
    order = np.argsort(known, kind="stable")
    rows = order[np.clip(np.searchsorted(known, wanted, sorter=order), 0, len(known) - 1)]
    absent = wanted[known[rows] != wanted]
    if len(absent):
        raise FrameRequestError(f"episode {int(absent[0])} is not in meta/episodes")
    chunks, files, starts = (episodes[c].to_numpy()[rows] for c in columns)
    times = starts + np.asarray(frame_index, dtype=np.float64) / fps
    return [((int(c), int(f)), float(t)) for c, f, t in zip(chunks, files, times, strict=True)]


class FrameReader:
    """Decodes the frames of sampled steps; one per training worker."""

    def __init__(self, root: str | Path, *, open_files: int = 16) -> None:
        self.root = Path(root)
        # Files kept open: the most recently used; a worker samples from all of them.
        self.open_files = open_files
        # Frames decoded to answer requests, and seeks made: the decode cost per sample.
        self.decoded = 0
        self.seeks = 0
        self._videos: OrderedDict[str, _Video] = OrderedDict()
        self._pid = os.getpid()
        self._inherited: list[OrderedDict[str, _Video]] = []

    def frames(self, key: str, requests: Sequence[tuple[VideoFile, float]]) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB frames of camera ``key``, in the order requested, for
        ``(file, timestamp in that file)`` requests (``locate`` makes them)."""
        if not requests:
            raise FrameRequestError("no frames requested")
        # Every request is checked before any decoding: a bad one is refused whole.
        by_file: dict[str, dict[int, list[int]]] = {}
        for n, (file, timestamp) in enumerate(requests):
            relative = video_path(key, file)
            pts = self._video(relative).frame_at(float(timestamp))
            by_file.setdefault(relative, {}).setdefault(pts, []).append(n)
        sizes = {(v.width, v.height) for v in map(self._video, by_file)}
        if len(sizes) > 1:
            raise FrameRequestError(f"the files of camera {key} differ in size: {sorted(sizes)}")
        width, height = sizes.pop()
        out = np.empty((len(requests), height, width, 3), np.uint8)
        for relative, places in by_file.items():
            video = self._video(relative)
            for pts, picture in video.decode(sorted(places)):
                out[places[pts]] = picture
            self.decoded += video.decoded
            self.seeks += video.seeks
            video.decoded = video.seeks = 0
        return out

    def _video(self, relative: str) -> _Video:
        if os.getpid() != self._pid:
            # A forked worker: the parent's containers share file offsets with it, and freeing
            # them here crashes FFmpeg (their decoder's threads stayed in the parent), so they
            # are set aside, never used nor freed, and the worker opens its own.
            self._inherited.append(self._videos)
            self._videos = OrderedDict()
            self._pid = os.getpid()
        video = self._videos.pop(relative, None)
        if video is None:
            path = self.root / relative
            if not path.is_file():
                raise FrameRequestError(f"no video file {relative} in the store at {self.root}")
            video = _Video(path, relative)
            while len(self._videos) >= self.open_files:
                self._videos.popitem(last=False)[1].close()
        self._videos[relative] = video
        return video

    def close(self) -> None:
        for video in self._videos.values():
            video.close()
        self._videos.clear()

    def __getstate__(self) -> dict:
        # Open containers stay with the process that opened them.
        return {**self.__dict__, "_videos": OrderedDict(), "_inherited": []}

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Video:
    """One open video file: its frames' times and keyframes, and a decoder kept warm."""

    def __init__(self, path: Path, relative: str) -> None:
        self.relative = relative
        try:
            self.container = av.open(str(path))
        except av.error.FFmpegError as exc:
            raise FrameRequestError(f"{relative} is not a readable video ({exc})") from None
        try:
            stream = self.container.streams.video[0]
        except IndexError:
            self.container.close()
            raise FrameRequestError(f"{relative} has no video stream") from None
        # One thread: a worker decodes a few frames per sample, and a threaded decoder would
        # hold frames back (and decode past the one wanted) to fill its threads.
        stream.codec_context.thread_count = 1
        self.stream = stream
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.time_base = Fraction(stream.time_base)
        # Read once from the container's packets (no decoding): each frame's pts, in order,
        # and the keyframes'.
        frames, keys = [], []
        try:
            for packet in self.container.demux(stream):
                if packet.pts is not None:
                    frames.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
        except av.error.FFmpegError as exc:
            self.container.close()
            raise FrameRequestError(f"{relative} is not a readable video ({exc})") from None
        if not frames:
            self.container.close()
            raise FrameRequestError(f"{relative} holds no frames")
        self.pts = sorted(frames)
        self.position = {pts: i for i, pts in enumerate(self.pts)}
        self.keys = sorted(keys)
        self.period = (self.pts[-1] - self.pts[0]) / (len(self.pts) - 1) if len(self.pts) > 1 else 1
        # Where the decoder stands: the pts of the last frame it gave, and its frames to come.
        self._last: int | None = None
        self._stream: Iterator[av.VideoFrame] | None = None
        self.decoded = self.seeks = 0

    def seconds(self, pts: int) -> float:
        return float(pts * self.time_base)

    def frame_at(self, timestamp: float) -> int:
        """The pts of the frame shown at ``timestamp`` (seconds in this file)."""
        first, last = self.seconds(self.pts[0]), self.seconds(self.pts[-1])
        slack = TOLERANCE * self.seconds(self.period)
        if not first - slack <= timestamp <= last + slack:
            raise FrameRequestError(
                f"{timestamp:.4f} s is outside {self.relative}, whose frames run from "
                f"{first:.4f} s to {last:.4f} s"
            )
        pts = timestamp / self.time_base
        i = bisect.bisect_left(self.pts, pts)
        nearest = min(self.pts[max(i - 1, 0) : i + 1], key=lambda p: abs(p - pts))
        if abs(nearest - pts) > TOLERANCE * self.period:
            raise FrameRequestError(
                f"no frame of {self.relative} at {timestamp:.4f} s (nearest at "
                f"{self.seconds(nearest):.4f} s)"
            )
        return nearest

    def decode(self, wanted: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """(pts, RGB frame) for each pts in ``wanted`` (sorted), decoding each group of
        pictures once: on from the last frame decoded when that is no further from the frame
        than the keyframe at or before it, else from that keyframe."""
        for pts in wanted:
            key = bisect.bisect_right(self.keys, pts) - 1
            if key < 0:
                raise FrameRequestError(f"{self.relative} has no keyframe before pts {pts}")
            last = self.position.get(self._last, -2)
            if not self.position[self.keys[key]] <= last + 1 <= self.position[pts]:
                self._seek(self.keys[key])
            try:
                yield pts, self._decode_to(pts, key)
            except av.error.FFmpegError as exc:
                self._last = None  # the next request seeks afresh
                raise FrameRequestError(
                    f"{self.relative}: the frame at {self.seconds(pts):.4f} s does not decode "
                    f"({exc})"
                ) from None

    def _decode_to(self, pts: int, key: int) -> np.ndarray:
        for frame in self._stream:
            self.decoded += 1
            self._last = frame.pts
            if frame.pts == pts:
                # One thread for the conversion too: a worker is one thread, and the pool
                # swscale would start cannot be freed in a process forked after it started.
                return frame.to_ndarray(format="rgb24", threads=1)
            if frame.pts > pts and key > 0:
                # The seek landed past the keyframe (a demuxer may index by decoding time):
                # start again one keyframe earlier.
                self._seek(self.keys[key - 1])
                return self._decode_to(pts, 0)
            if frame.pts > pts:
                break
        self._last = None
        raise FrameRequestError(
            f"{self.relative}: the frame at {self.seconds(pts):.4f} s did not come out of the "
            "decoder (a damaged file?)"
        )

    def _seek(self, pts: int) -> None:
        self.container.seek(pts, stream=self.stream, backward=True)
        self.seeks += 1
        self._last = None
        self._stream = _frames(self.container, self.stream)

    def close(self) -> None:
        self.container.close()


def _frames(container, stream) -> Iterator[av.VideoFrame]:
    """The stream's frames from where the container stands (a function, not a method: the
    generator must not hold the ``_Video`` in a cycle, so that it is freed when dropped)."""
    for packet in container.demux(stream):
        # The last packet of a demux is empty: it flushes the frames the decoder held.
        yield from packet.decode()
