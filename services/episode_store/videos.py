"""The episode store's video files: per camera, many episodes' frames in one MP4, as LeRobot v3.0.

Each episode's camera arrives as its own MP4 (``CameraTrack.path``: one frame per control
step, starting with a keyframe). ``pack`` remuxes such tracks end to end into one file, with
no re-encoding: every packet keeps its bytes and only its timestamps move by the episode's
offset, so an episode occupies ``[from_timestamp, to_timestamp)`` of the file and its step i
is the frame at ``from_timestamp + i / fps``. ``cut`` writes a file again with only some
episodes' spans, closing the gaps (a deletion); since every episode starts with a keyframe,
no kept frame refers to a removed one.

Image statistics (LeRobot's per-channel mean/std/min/max on the 0-1 scale, shape [3, 1, 1])
come from frames decoded while packing: ``sample_count(n)`` of an episode's n keyframes,
spread evenly (LeRobot's count, which it takes of all frames), each downsampled to about 150
pixels on its longer side as LeRobot does. Only keyframes are decoded, because a
keyframe decodes on its own: the sample costs a few dozen decodes per episode, not the whole
track. ``count`` is the number of frames sampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa

from services.features import IMAGE_PREFIX

VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
# One episode's camera cut out of its packed file for the review pages, a cache
# (services/episode_store/clips.py): CLIPS/<camera>/<episode id>-....mp4 under the store root.
CLIPS = ".clips"
# LeRobot's sampling of frames for image statistics (lerobot.datasets.compute_stats).
SAMPLES_MIN = 100
SAMPLES_MAX = 10_000
SAMPLES_POWER = 0.75
# Frames larger than this (longer side, pixels) are strided down to about STATS_SIZE first.
STATS_DOWNSAMPLE_ABOVE = 300
STATS_SIZE = 150


@dataclass(frozen=True)
class Stream:
    """What a video file (or track) holds: frames of one size, codec and rate."""

    width: int
    height: int
    codec: str
    pix_fmt: str
    # The codec's global header (SPS/PPS, AV1 sequence header): files are only joined when
    # this matches, since a remuxed packet is decoded with the header of the file it is in.
    extradata: bytes

    @classmethod
    def of(cls, path: Path) -> Stream:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            context = stream.codec_context
            return cls(
                width=context.width,
                height=context.height,
                # The codec's own name (av1, h264), not the decoder's (libdav1d).
                codec=context.codec.canonical_name,
                pix_fmt=context.pix_fmt or "",
                extradata=bytes(context.extradata or b""),
            )


@dataclass(frozen=True)
class Span:
    """An episode's place in a video file, in seconds (end exclusive), and its frame count."""

    from_timestamp: float
    to_timestamp: float
    frames: int


def sample_count(frames: int) -> int:
    """How many frames of an episode LeRobot samples for image statistics."""
    if frames < SAMPLES_MIN:
        return frames
    return max(SAMPLES_MIN, min(int(frames**SAMPLES_POWER), SAMPLES_MAX))


def pack(
    tracks: Sequence[Path], fps: Fraction, destination: Path
) -> tuple[list[Span], list[dict[str, list]]]:
    """Remux ``tracks`` (each one episode, ``fps`` frames per second) end to end into
    ``destination``; returns each episode's span and image statistics."""
    spans, stats = [], []
    with _Writer(destination, tracks[0], fps) as writer:
        for track in tracks:
            with av.open(str(track)) as container:
                source = container.streams.video[0]
                packets = [p for p in container.demux(source) if p.dts is not None]
                start = writer.end
                for packet in packets:
                    writer.mux(packet, source.time_base, start)
                frames = len(packets)
                writer.end = start + Fraction(frames) / fps
                stats.append(_sample_stats(source, packets))
            spans.append(Span(float(start), float(writer.end), frames))
    return spans, stats


def cut(source: Path, keep: Sequence[Span], fps: Fraction, destination: Path) -> list[Span]:
    """Write ``source`` (``fps`` frames per second) again with only the episodes at ``keep``
    (spans in it), end to end in that order; returns their spans in ``destination``."""
    tick = 1 / fps
    spans = []
    with av.open(str(source)) as container:
        video = container.streams.video[0]
        packets = [p for p in container.demux(video) if p.dts is not None]
        by_time = [(p.pts * video.time_base, p) for p in packets]
        with _Writer(destination, source, fps) as writer:
            for span in keep:
                # Half a frame of slack: a span's ends are the float seconds meta/episodes holds.
                low = Fraction(span.from_timestamp) - tick / 2
                high = Fraction(span.to_timestamp) - tick / 2
                mine = [(t, p) for t, p in by_time if low <= t < high]
                if len(mine) != span.frames:
                    raise ValueError(
                        f"{source.name}: {len(mine)} frames at [{span.from_timestamp:.3f}, "
                        f"{span.to_timestamp:.3f}) s, where meta/episodes says {span.frames}"
                    )
                start = writer.end
                shift = start - Fraction(span.from_timestamp)
                for _, packet in mine:
                    writer.mux(packet, video.time_base, shift)
                writer.end = start + Fraction(span.frames) / fps
                spans.append(Span(float(start), float(writer.end), span.frames))
    return spans


def decode_frames(path: Path, timestamps: Sequence[float], fps: float) -> list[np.ndarray]:
    """The RGB frames shown at ``timestamps`` (seconds) of a video file of ``fps`` frames per
    second, decoded in one pass (for reading back; training has its own loader)."""
    wanted = sorted(timestamps)
    found: dict[float, np.ndarray] = {}
    tick = 1 / fps
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            when = float(frame.pts * stream.time_base)
            for t in wanted:
                if abs(when - t) < tick / 2:
                    found[t] = frame.to_ndarray(format="rgb24")
            if len(found) == len(wanted):
                break
    missing = [t for t in wanted if t not in found]
    if missing:
        raise LookupError(f"{path.name} has no frame at {missing[:5]} s")
    return [found[t] for t in timestamps]


def camera_reason(
    cameras: Mapping[str, tuple[int, int]], expected: Mapping[str, tuple[int, int]]
) -> str | None:
    """Why an episode's cameras (``{key: (width, height)}``) cannot join a store with
    ``expected``; None when they can."""
    if dict(cameras) == dict(expected):
        return None

    def named(shapes: Mapping[str, tuple[int, int]]) -> str:
        if not shapes:
            return "no cameras"
        return ", ".join(
            f"{key.removeprefix(IMAGE_PREFIX)} {w}x{h}" for key, (w, h) in sorted(shapes.items())
        )

    return (
        f"cameras ({named(cameras)}) differ from the episode store's ({named(expected)}): the "
        "LeRobot layout holds one shape per feature, so ingest these cameras into their own "
        "FLYWHEEL_HOME"
    )


def video_keys(episodes: pa.Table) -> list[str]:
    """The camera keys whose frames meta/episodes places (its videos/<key>/... columns)."""
    return sorted(
        name.removeprefix("videos/").removesuffix("/chunk_index")
        for name in episodes.column_names
        if name.startswith("videos/") and name.endswith("/chunk_index")
    )


def videos_named(episodes: pa.Table) -> set[str]:
    """The video files that rows of meta/episodes name."""
    named = set()
    for key in video_keys(episodes):
        places = zip(
            episodes[f"videos/{key}/chunk_index"].to_pylist(),
            episodes[f"videos/{key}/file_index"].to_pylist(),
            strict=True,
        )
        named.update(
            VIDEO_PATH.format(video_key=key, chunk_index=c, file_index=f)
            for c, f in places
            if c is not None
        )
    return named


def video_feature(stream: Stream, fps: float) -> dict[str, Any]:
    """info.json's entry for a camera, as LeRobot v3.0 writes it."""
    return {
        "dtype": "video",
        "shape": [stream.height, stream.width, 3],
        "names": ["height", "width", "channels"],
        "info": {
            "video.height": stream.height,
            "video.width": stream.width,
            "video.codec": stream.codec,
            "video.pix_fmt": stream.pix_fmt,
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        },
    }


class _Writer:
    """An MP4 that packets from other files with the same stream are remuxed into."""

    def __init__(self, destination: Path, template: Path, fps: Fraction) -> None:
        self.end = Fraction(0)
        self._input = av.open(str(template))
        self._output = av.open(str(destination), "w", format="mp4")
        # opaque: copy the stream's parameters without opening an encoder for them (the
        # packets are copied, never re-encoded).
        self._stream = self._output.add_stream_from_template(
            self._input.streams.video[0], opaque=True
        )
        self._stream.time_base = 1 / fps

    def __enter__(self) -> _Writer:
        return self

    def mux(self, packet: av.Packet, time_base: Fraction, shift: Fraction) -> None:
        """Add ``packet`` (timed in ``time_base``), moved later by ``shift`` seconds."""
        out = self._stream.time_base
        packet.pts = round((packet.pts * time_base + shift) / out)
        packet.dts = round((packet.dts * time_base + shift) / out)
        if packet.duration:
            packet.duration = round(packet.duration * time_base / out)
        packet.stream = self._stream
        packet.time_base = out
        self._output.mux(packet)

    def __exit__(self, *exc) -> None:
        self._output.close()
        self._input.close()


def _sample_stats(stream, packets: list[av.Packet]) -> dict[str, list]:
    """Per-channel statistics (0-1) of up to ``sample_count`` evenly spread keyframes."""
    keyframes = [p for p in packets if p.is_keyframe]
    n = sample_count(len(keyframes))
    chosen = [keyframes[i] for i in np.round(np.linspace(0, len(keyframes) - 1, n)).astype(int)]
    decoder = av.CodecContext.create(stream.codec_context.name, "r")
    decoder.extradata = stream.codec_context.extradata
    frames = []
    for packet in [*chosen, None]:
        for frame in decoder.decode(packet):
            frames.append(_downsampled(frame.to_ndarray(format="rgb24")))
    if not frames:
        raise ValueError("no keyframe of the track decodes: it cannot give image statistics")
    pixels = np.stack(frames)
    # One histogram of the 256 levels per channel gives all four exactly, in a fraction of
    # the time of float arithmetic over every pixel.
    counts = np.stack([np.bincount(pixels[..., c].ravel(), minlength=256) for c in range(3)])
    levels = np.arange(256) / 255
    total = counts.sum(1)
    mean = counts @ levels / total
    std = np.sqrt(np.maximum(counts @ levels**2 / total - mean**2, 0.0))
    seen = counts > 0
    low = levels[seen.argmax(1)]
    high = levels[255 - seen[:, ::-1].argmax(1)]
    return {
        "mean": mean.reshape(3, 1, 1).tolist(),
        "std": std.reshape(3, 1, 1).tolist(),
        "min": low.reshape(3, 1, 1).tolist(),
        "max": high.reshape(3, 1, 1).tolist(),
        "count": [len(frames)],
    }


def _downsampled(frame: np.ndarray) -> np.ndarray:
    """LeRobot's auto_downsample_height_width: stride a large frame down to about 150 px."""
    longest = max(frame.shape[:2])
    if longest < STATS_DOWNSAMPLE_ABOVE:
        return frame
    step = longest // STATS_SIZE
    return frame[::step, ::step]
