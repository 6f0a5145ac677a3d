"""One episode's camera as an MP4 of its own, cut out of the store's packed video files.

The store packs many episodes into one MP4 per camera and ingest batch (LeRobot v3.0); a
browser plays a file, not a span of one. ``write_clip`` copies the span's packets into a
fresh MP4 with no re-encoding, its first frame at time 0, the moov atom first so that
playback starts before the whole file has arrived.

The store starts every episode on a keyframe, but a file written by another tool may not
(LeRobot's own encoder keeps a fixed keyframe interval across episodes). Then the packets
from the keyframe before the span are copied too, at negative times: the decoder needs them
to build the span's first frames, and the MP4's edit list tells the player to start showing
at time 0, so the clip still shows exactly the episode's frames.

``camera_places`` reads where an episode's cameras are from the meta/episodes file of its
data file (columns ``videos/<key>/chunk_index``, ``file_index``, ``from_timestamp``,
``to_timestamp``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pyarrow.parquet as pq

from services.episode_store.parquet import VIDEO_COLUMNS
from services.episode_store.videos import CLIPS, VIDEO_PATH, video_keys
from services.features import EPISODE_ID, IMAGE_PREFIX


@dataclass(frozen=True)
class CameraPlace:
    """Where one episode's frames of one camera are in the store."""

    name: str
    # The packed video file, relative to the store root.
    video_file: str
    # Seconds in that file, end exclusive; step i is the frame at from_timestamp + i / fps.
    from_timestamp: float
    to_timestamp: float


def camera_places(store_root: Path, data_file: str, episode_id: str) -> list[CameraPlace]:
    """The cameras of an episode stored in ``data_file`` (relative to ``store_root``), by
    name; none for an episode recorded without cameras."""
    meta = store_root / "meta/episodes" / data_file.removeprefix("data/")
    if not meta.exists():
        raise LookupError(f"the episode store has no meta/episodes file for {data_file}")
    table = pq.read_table(meta)
    rows = [i for i, e in enumerate(table[EPISODE_ID].to_pylist()) if e == episode_id]
    if not rows:
        raise LookupError(f"episode {episode_id} is not in {meta.relative_to(store_root)}")
    row = rows[0]
    places = []
    for key in video_keys(table):
        values = {field: table[f"videos/{key}/{field}"][row].as_py() for field in VIDEO_COLUMNS}
        if values["chunk_index"] is None:  # this episode has no frames of that camera
            continue
        places.append(
            CameraPlace(
                name=key.removeprefix(IMAGE_PREFIX),
                video_file=VIDEO_PATH.format(
                    video_key=key,
                    chunk_index=values["chunk_index"],
                    file_index=values["file_index"],
                ),
                from_timestamp=values["from_timestamp"],
                to_timestamp=values["to_timestamp"],
            )
        )
    return places


def episode_cameras(
    store_root: Path, data_file: str, episode_id: str, steps: int
) -> list[dict[str, float | str]]:
    """The cameras of an episode as a player needs them: name, and frames per second (one
    frame per step, so the player turns the video's time into the step shown)."""
    return [
        {"name": p.name, "fps": steps / (p.to_timestamp - p.from_timestamp)}
        for p in camera_places(store_root, data_file, episode_id)
    ]


def clip_path(store_root: Path, episode_id: str, place: CameraPlace) -> Path:
    """Where the clip of ``place`` is kept: named by the episode (``drop_episodes`` removes
    an episode's clips with it) and by the packed file's modification time, so that a file
    written again never serves an old clip."""
    mtime = (store_root / place.video_file).stat().st_mtime_ns
    return store_root / CLIPS / place.name / f"{episode_id}-{mtime}-{place.from_timestamp:.6f}.mp4"


def write_clip(source: Path, from_timestamp: float, to_timestamp: float, destination: Path) -> int:
    """Copy the frames of ``source`` shown in [from_timestamp, to_timestamp) seconds into a
    new MP4 at ``destination`` (written under a temporary name, then renamed), the first of
    them at time 0; returns how many frames the clip shows."""
    with av.open(str(source)) as container:
        video = container.streams.video[0]
        base = video.time_base
        packets = [p for p in container.demux(video) if p.dts is not None and p.size]
        rate = video.average_rate or video.guessed_rate
        # Half a frame of slack: meta/episodes holds the span's ends as float seconds.
        slack = Fraction(1, 2) / Fraction(rate) if rate else Fraction(0)
        low, high = Fraction(from_timestamp) - slack, Fraction(to_timestamp) - slack
        shown = [i for i, p in enumerate(packets) if low <= p.pts * base < high]
        if not shown:
            raise LookupError(
                f"{source.name} has no frame in [{from_timestamp:.3f}, {to_timestamp:.3f}) s"
            )
        first = shown[0]
        while first >= 0 and not packets[first].is_keyframe:
            first -= 1  # the decoder needs the frames from the keyframe before the span
        if first < 0:
            raise ValueError(f"{source.name}: no keyframe at or before {from_timestamp:.3f} s")
        start = min(packets[i].pts for i in shown)
        copied = packets[first : shown[-1] + 1]
        destination.parent.mkdir(parents=True, exist_ok=True)
        # A name of this writer's own: two requests for one clip may cut it at once.
        partial = destination.with_name(
            f".{destination.name}.{os.getpid()}-{threading.get_ident()}.partial"
        )
        # faststart: the index at the front, so that a browser starts playing at once.
        with av.open(str(partial), "w", format="mp4", options={"movflags": "faststart"}) as out:
            stream = out.add_stream_from_template(video, opaque=True)
            stream.time_base = base
            for packet in copied:
                packet.pts -= start
                packet.dts -= start
                packet.stream = stream
                out.mux(packet)
    os.replace(partial, destination)
    return len(shown)
