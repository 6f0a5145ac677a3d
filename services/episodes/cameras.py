"""Camera frames of an episode, from the log's messages to one video track per camera.

A log reader streams a camera's messages into a ``CameraSpool``: the payloads go to an
anonymous file on disk as they arrive and only their times stay in memory, so a 10-minute
log with three 30 Hz cameras is never held whole. Once the reader knows the episodes' control
steps, ``episode_tracks`` makes one pass over each spool: it decodes the frames in log order,
picks for every step the latest frame at or before it, records what validation needs to
know (``CameraFacts``: staleness, gaps, resolution, frozen and black frames, undecodable
messages, each named by step) and encodes one frame per step into a per-episode MP4
(``CameraTrack``), which the episode store packs into its video files.

Payloads (``Payload.format``):

``raw``    ``sensor_msgs/Image``: encodings ``rgb8``, ``bgr8``, ``mono8`` (row stride ``step``)
``jpeg``, ``png``   ``sensor_msgs/CompressedImage`` and ``foxglove.CompressedImage``
``h264``   ``foxglove.CompressedVideo``: H.264 Annex B, one frame per message, no B-frames,
           the first message a keyframe with SPS/PPS (Foxglove's definition)

Frames are stored as RGB, one per control step, at the episode's control rate.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from services.config import VideoSettings

RAW_ENCODINGS = ("rgb8", "bgr8", "mono8")
# Encodings a camera may log that are out of scope for now (depth and other sensor formats).
DEPTH_ENCODINGS = ("16UC1", "32FC1", "mono16", "16SC1")
FORMATS = ("raw", "jpeg", "png", "h264")
# A frame whose mean brightness (0-255) is below this counts as black.
BLACK_LEVEL = 4.0

_HEADER = struct.Struct("<I")

# SVT-AV1 prints its configuration to stderr for every encoder it opens unless told to log
# errors only; it reads this variable itself, so it is set here, before any encoder starts.
os.environ.setdefault("SVT_LOG", "1")


class FrameError(ValueError):
    """A camera message that cannot be a frame; the message says which and why."""


@dataclass(frozen=True)
class CameraSpec:
    """One camera of a fleet, as its mapping file names it."""

    # The camera's key in the store: frames go to the feature ``observation.images.<name>``.
    name: str
    topic: str
    # A step whose latest frame is older than this (seconds) is stale; validation sees it.
    max_age_s: float = 0.1
    # Identical frames for longer than this (seconds) mean a frozen camera.
    frozen_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"camera name {self.name!r}: use letters, digits and '_'")
        if not self.topic.startswith("/"):
            raise ValueError(f"camera {self.name}: topic {self.topic!r} must start with '/'")
        if not 0 < self.max_age_s < float("inf"):
            raise ValueError(f"camera {self.name}: max_age_s must be positive")
        if not 0 < self.frozen_s < float("inf"):
            raise ValueError(f"camera {self.name}: frozen_s must be positive")

    @property
    def feature(self) -> str:
        return f"observation.images.{self.name}"


# Per codec, the CRF at which a policy's validation loss on decoded frames is the raw frames'
# (bench/video_codec.py: 1.04x for H.264 at 18, 1.05x for AV1 at 30, at 64 px).
DEFAULT_CRF = {"libx264": 18, "libsvtav1": 30}


@dataclass(frozen=True)
class VideoFormat:
    """How the store encodes camera tracks (``bench/video_codec.py`` measures the choices)."""

    # An FFmpeg encoder PyAV has: libx264 (H.264), libsvtav1 (AV1, LeRobot's default). H.264
    # at CRF 18 keeps a policy's validation loss where AV1 at CRF 30 does, in 25% fewer bytes
    # and a third of the encode time; and SVT-AV1 has been seen to hang in a flush here
    # (docs/camera-frames.md).
    codec: str = "libx264"
    # Frames between keyframes: small, so decoding a randomly sampled step stays cheap.
    gop: int = 2
    # None: the codec's own (DEFAULT_CRF).
    crf: int | None = None
    pix_fmt: str = "yuv420p"

    @classmethod
    def from_settings(cls, video: VideoSettings) -> VideoFormat:
        """The format the settings name (FLYWHEEL_VIDEO_CODEC, _GOP, _CRF)."""
        return cls(codec=video.codec, gop=video.gop, crf=video.crf)

    @property
    def quality(self) -> int:
        """The CRF the encoder is given."""
        return self.crf if self.crf is not None else DEFAULT_CRF[self.codec]

    def options(self) -> dict[str, str]:
        options = {"g": str(self.gop), "crf": str(self.quality)}
        if self.codec == "libx264":
            options["preset"] = "veryfast"
        if self.codec == "libsvtav1":
            options["preset"] = "10"
        return options


@dataclass(frozen=True)
class Payload:
    """One camera message as logged, before decoding."""

    format: str
    data: bytes
    # For raw images: the message's size, encoding and row stride in bytes.
    width: int = 0
    height: int = 0
    encoding: str = ""
    step: int = 0

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise FrameError(f"frame format {self.format!r} is none of {FORMATS}")


class CameraSpool:
    """One camera's messages of one log, spooled to disk in arrival order."""

    def __init__(self, spec: CameraSpec, directory: str | Path | None = None) -> None:
        self.spec = spec
        # Anonymous: gone with the process, whatever happens (closed by ``close``).
        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
        self._times: list[int] = []
        self._meta: list[tuple[str, int, int, str, int]] = []
        # Messages that could not even be read as a payload: (message number, why).
        self.unreadable: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._times)

    @property
    def encoding(self) -> str:
        """What the camera logged: rgb8, bgr8, mono8, jpeg, png or h264 (its first message)."""
        if not self._meta:
            return ""
        fmt, _, _, encoding, _ = self._meta[0]
        return encoding if fmt == "raw" else fmt

    @property
    def times(self) -> np.ndarray:
        """Each message's time (ns, the mapping's clock), in arrival order."""
        return np.asarray(self._times, dtype=np.int64)

    def add(self, time_ns: int, payload: Payload) -> None:
        self._file.write(_HEADER.pack(len(payload.data)))
        self._file.write(payload.data)
        self._times.append(int(time_ns))
        self._meta.append(
            (payload.format, payload.width, payload.height, payload.encoding, payload.step)
        )

    def add_unreadable(self, time_ns: int, reason: str) -> None:
        """A message that is not a frame at all: it keeps its place in time, and its reason."""
        self.unreadable.append((len(self._times), reason))
        self.add(time_ns, Payload("raw", b"", encoding="unreadable"))

    def payloads(self) -> Iterator[Payload]:
        """The spooled messages, in arrival order."""
        self._file.seek(0)
        for fmt, width, height, encoding, step in self._meta:
            (size,) = _HEADER.unpack(self._file.read(_HEADER.size))
            yield Payload(fmt, self._file.read(size), width, height, encoding, step)
        self._file.seek(0, io.SEEK_END)

    def close(self) -> None:
        self._file.close()


def decode_frames(spool: CameraSpool) -> Iterator[tuple[int, np.ndarray | FrameError]]:
    """(message number, RGB frame or why not) for every spooled message, in arrival order."""
    unreadable = dict(spool.unreadable)
    video = _H264()
    for n, payload in enumerate(spool.payloads()):
        if n in unreadable:
            yield n, FrameError(unreadable[n])
        elif payload.format == "h264":
            yield from video.decode(n, payload.data)
        else:
            try:
                yield n, decode_image(payload)
            except FrameError as exc:
                yield n, exc
    yield from video.flush()


def decode_image(payload: Payload) -> np.ndarray:
    """One raw, JPEG or PNG image as an (H, W, 3) uint8 RGB array."""
    if payload.format == "raw":
        return _raw(payload)
    try:
        with Image.open(io.BytesIO(payload.data)) as image:
            found = (image.format or "unknown").lower()
            if found != payload.format:
                raise FrameError(f"a {payload.format.upper()} message holds {found.upper()} data")
            image.load()
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError as exc:
        # Pillow's message names the buffer object by its address: say it the same each time.
        raise FrameError(f"corrupt {payload.format.upper()} (not an image)") from exc
    except (OSError, SyntaxError) as exc:
        raise FrameError(f"corrupt {payload.format.upper()} ({exc})") from exc


def _raw(payload: Payload) -> np.ndarray:
    encoding, width, height = payload.encoding, payload.width, payload.height
    if encoding in DEPTH_ENCODINGS:
        raise FrameError(f"depth image ({encoding}): depth cameras are out of scope for now")
    if encoding not in RAW_ENCODINGS:
        raise FrameError(f"raw encoding {encoding!r} is none of {RAW_ENCODINGS}")
    channels = 1 if encoding == "mono8" else 3
    stride = payload.step or width * channels
    if width <= 0 or height <= 0 or stride < width * channels:
        raise FrameError(f"raw image {width}x{height} with row stride {stride} is not an image")
    if len(payload.data) < stride * height:
        raise FrameError(
            f"raw image {width}x{height} {encoding} needs {stride * height} bytes, has "
            f"{len(payload.data)}"
        )
    rows = np.frombuffer(payload.data, dtype=np.uint8, count=stride * height)
    pixels = rows.reshape(height, stride)[:, : width * channels].reshape(height, width, channels)
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[..., ::-1])
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    return pixels


class _H264:
    """A Foxglove CompressedVideo stream: H.264 Annex B, one frame per message."""

    def __init__(self) -> None:
        self._codec: av.CodecContext | None = None
        self._pending: set[int] = set()
        self._decoded = False

    def decode(self, n: int, data: bytes) -> Iterator[tuple[int, np.ndarray | FrameError]]:
        if self._codec is None:
            self._codec = av.CodecContext.create("h264", "r")
            # Refuse a damaged message instead of concealing it (FFmpeg's default would show a
            # truncated frame as a smeared one).
            self._codec.options = {"err_detect": "explode"}
        packet = av.Packet(data)
        packet.pts = n
        self._pending.add(n)
        try:
            frames = self._codec.decode(packet)
        except av.error.FFmpegError as exc:
            self._pending.discard(n)
            hint = (
                ""
                if self._decoded
                else "; no frame decoded yet: does the stream start with a keyframe and its "
                "SPS/PPS?"
            )
            yield n, FrameError(f"undecodable H.264 ({exc}){hint}")
            return
        yield from self._frames(frames)

    def flush(self) -> Iterator[tuple[int, np.ndarray | FrameError]]:
        if self._codec is not None:
            with contextlib.suppress(av.error.FFmpegError):
                yield from self._frames(self._codec.decode(None))
        # Messages the decoder gave no frame for: most often a stream that does not start with
        # a keyframe and its SPS/PPS, or a truncated message.
        for n in sorted(self._pending):
            yield (
                n,
                FrameError(
                    "H.264 message decoded to no frame (does the stream start with a keyframe "
                    "and its SPS/PPS? is the message truncated?)"
                ),
            )
        self._pending.clear()

    def _frames(self, frames) -> Iterator[tuple[int, np.ndarray]]:
        for frame in frames:
            n = int(frame.pts) if frame.pts is not None else min(self._pending, default=-1)
            self._pending.discard(n)
            self._decoded = True
            yield n, frame.to_ndarray(format="rgb24")


@dataclass
class CameraFacts:
    """What one camera did over one episode: the validation suite's evidence."""

    # Messages the camera logged within the episode's span.
    frames: int = 0
    # Steps before the camera's first frame (no frame at or before them).
    missing_steps: int = 0
    # Steps whose latest frame is older than the camera's max_age_s, the first such step, and
    # the oldest age seen (s).
    stale_steps: int = 0
    first_stale_step: int | None = None
    max_age_s: float = 0.0
    # The largest gap between consecutive frames within the episode (s).
    max_gap_s: float = 0.0
    # (width, height) of the first frame, and the first step showing another size.
    width: int = 0
    height: int = 0
    resolution_change: tuple[int, int, int] | None = None  # (step, width, height)
    # What the log carried: rgb8, bgr8, mono8, jpeg, png or h264.
    encoding: str = ""
    # The first step of a run of identical frames longer than the camera's frozen_s.
    frozen_from_step: int | None = None
    # Steps whose frame is black, and the first.
    black_steps: int = 0
    first_black_step: int | None = None
    # The first undecodable frame a step would have shown: (step, why).
    decode_error: tuple[int, str] | None = None
    # The first frame whose time goes back from the one before: (step, seconds back).
    out_of_order: tuple[int, float] | None = None


@dataclass
class CameraTrack:
    """One camera of one episode: an MP4 with one frame per step, and the facts."""

    name: str
    facts: CameraFacts
    # None when the frames could not make a video (see the facts); the store packs this file
    # into its own and the ingest removes it (``discard``).
    path: Path | None = None
    fps: Fraction = Fraction(0)
    # sha256 of the aligned frames' pixels: the same frames give the same digest.
    digest: str = ""
    video_format: VideoFormat = field(default_factory=VideoFormat)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def episode_tracks(
    spool: CameraSpool,
    episodes: list[tuple[np.ndarray, float]],
    *,
    video_format: VideoFormat | None = None,
    directory: str | Path | None = None,
) -> list[CameraTrack]:
    """One track per episode for this camera, in one decoding pass over the spool.

    ``episodes`` are (step times in ns on the spool's clock, control rate in Hz), in time
    order and not overlapping, as the reader split the log.
    """
    video_format = video_format or VideoFormat()
    spec = spool.spec
    times = spool.times
    builders = [
        _TrackBuilder(spec, ticks, hz, times, video_format, directory) for ticks, hz in episodes
    ]
    for builder in builders:
        builder.facts.encoding = spool.encoding
    # Which (episode, step)s show each frame; a frame may be held over several steps.
    demands: dict[int, list[tuple[int, int]]] = {}
    for e, builder in enumerate(builders):
        for step, n in enumerate(builder.held.tolist()):
            if n >= 0:
                demands.setdefault(n, []).append((e, step))
    # An episode's encoder is finished (and its memory freed) as soon as its last step has its
    # frame, so a long log of many episodes never holds more than a few encoders open.
    waiting = [0] * len(builders)
    for pairs in demands.values():
        for e, _ in pairs:
            waiting[e] += 1
    tracks: list[CameraTrack | None] = [None] * len(builders)
    # Decoders may answer late (an H.264 message that gave no frame is known at the end), so
    # frames are matched by message number, and the pass stops once every demand is met.
    for n, frame in decode_frames(spool) if demands else ():
        for e, step in demands.pop(n, ()):
            builders[e].put(step, frame)
            waiting[e] -= 1
            if not waiting[e]:
                tracks[e] = builders[e].finish()
        if not demands:
            break
    return [track or builder.finish() for track, builder in zip(tracks, builders, strict=True)]


class _TrackBuilder:
    """Aligns one episode's steps to a camera's frames and encodes them as they come."""

    def __init__(self, spec, ticks, hz, times, video_format, directory) -> None:
        self.spec = spec
        self.ticks = np.asarray(ticks, dtype=np.int64)
        self.fps = Fraction(hz).limit_denominator(1001)
        self.video_format = video_format
        self.directory = directory
        self.facts = CameraFacts()
        self.track = CameraTrack(spec.name, self.facts, fps=self.fps, video_format=video_format)
        self._hash = hashlib.sha256()
        self._container = None
        self._stream = None
        self._step = 0
        self._failed = False
        self._last_digest: bytes | None = None
        self._same_since = 0
        self.held = self._align(times)

    def _align(self, times: np.ndarray) -> np.ndarray:
        facts, ticks = self.facts, self.ticks
        if not len(ticks):
            return np.zeros(0, dtype=np.int64)
        inside = np.flatnonzero((times >= ticks[0]) & (times <= ticks[-1]))
        facts.frames = len(inside)
        if len(inside) > 1:
            facts.max_gap_s = float(np.diff(times[inside]).max()) / 1e9
        # Frames before the episode count for its first steps (the latest at or before).
        window = times[times <= ticks[-1]]
        back = np.flatnonzero(np.diff(window) < 0)
        if len(back):
            k = int(back[0]) + 1
            step = int(np.searchsorted(ticks, window[k - 1], side="left"))
            facts.out_of_order = (min(step, len(ticks) - 1), float(window[k - 1] - window[k]) / 1e9)
            self._failed = True
            return np.full(len(ticks), -1, dtype=np.int64)
        held = np.searchsorted(window, ticks, side="right") - 1
        facts.missing_steps = int((held < 0).sum())
        if not len(window):  # no frame at or before the episode's end: every step is missing
            self._failed = True
            return held
        ages = (ticks - window[np.maximum(held, 0)]) / 1e9
        ages[held < 0] = np.inf
        stale = np.flatnonzero((ages > self.spec.max_age_s) & (held >= 0))
        facts.stale_steps = len(stale)
        facts.first_stale_step = int(stale[0]) if len(stale) else None
        finite = ages[held >= 0]
        facts.max_age_s = float(finite.max()) if len(finite) else 0.0
        if facts.missing_steps:
            self._failed = True
        return held

    def put(self, step: int, frame: np.ndarray | FrameError) -> None:
        facts = self.facts
        if isinstance(frame, FrameError):
            if facts.decode_error is None:
                facts.decode_error = (step, str(frame))
            self._failed = True
            return
        if self._failed:
            return
        height, width = frame.shape[:2]
        if not facts.width:
            facts.width, facts.height = width, height
        elif (width, height) != (facts.width, facts.height):
            facts.resolution_change = (step, width, height)
            self._failed = True
            return
        pixels = np.ascontiguousarray(frame)
        digest = hashlib.sha1(pixels.data).digest()
        if digest != self._last_digest:
            self._last_digest, self._same_since = digest, step
        elif (
            facts.frozen_from_step is None
            and (self.ticks[step] - self.ticks[self._same_since]) / 1e9 > self.spec.frozen_s
        ):
            facts.frozen_from_step = self._same_since
        if float(pixels.mean()) < BLACK_LEVEL:
            facts.black_steps += 1
            if facts.first_black_step is None:
                facts.first_black_step = step
        self._hash.update(pixels.data)
        self._encode(pixels)

    def _encode(self, pixels: np.ndarray) -> None:
        if self._container is None:
            fd, name = tempfile.mkstemp(
                suffix=".mp4", prefix=f"{self.spec.name}-", dir=self.directory
            )
            os.close(fd)
            self.track.path = Path(name)
            self._container = av.open(str(self.track.path), "w", format="mp4")
            stream = self._container.add_stream(
                self.video_format.codec, rate=self.fps, options=self.video_format.options()
            )
            stream.width, stream.height = pixels.shape[1], pixels.shape[0]
            stream.pix_fmt = self.video_format.pix_fmt
            stream.time_base = 1 / self.fps
            self._stream = stream
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = self._step
        self._step += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def finish(self) -> CameraTrack:
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            # A closed container keeps its encoder's buffers while referenced: let them go now,
            # not when every episode of the log is done.
            self._container = self._stream = None
        if not self._failed and self._step != len(self.ticks) and self.facts.decode_error is None:
            self.facts.decode_error = (self._step, "no frame could be decoded for this step")
        if self._failed or self._step != len(self.ticks):
            self.track.discard()
        else:
            self.track.digest = self._hash.hexdigest()
        return self.track
