"""Camera videos in an episode store, written as the store lays them out (LeRobot v3.0):
many episodes end to end in one MP4 per camera, each episode's span in its meta/episodes row.

Written here with PyAV rather than through ingest, so the review pages can be tested on any
codec and on a file whose episodes do not start on keyframes (as another tool may write).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from services.episode_store.videos import VIDEO_PATH
from services.evaluation.closed_loop import SUITE
from services.evaluation.trajectories import video_path
from services.evaluation.videos import write_video
from services.features import EPISODE_ID, IMAGE_PREFIX
from services.store import session_scope
from services.store.models import Episode

SIZE = 64


def frame(step: int, episode: int) -> np.ndarray:
    """A frame that says its step: a bright bar at column ``step`` on a background per episode."""
    image = np.full((SIZE, SIZE, 3), 40 + 50 * (episode % 4), np.uint8)
    image[:, step % SIZE] = 255
    return image


def encode(
    path: Path,
    lengths: Sequence[int],
    fps: int,
    codec: str,
    *,
    gop: int = 2,
    keyframe_starts: bool = True,
) -> list[tuple[float, float]]:
    """Episodes of ``lengths`` frames end to end in one MP4; returns each one's span (s)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spans, t = [], 0
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.codec_context.max_b_frames = 0
            # no scene-cut keyframes: a new episode's picture would start one
            stream.options = {"tune": "zerolatency", "x264-params": "scenecut=0"}
        for episode, n in enumerate(lengths):
            for step in range(n):
                video_frame = av.VideoFrame.from_ndarray(frame(step, episode), format="rgb24")
                video_frame.pts = t + step
                video_frame.time_base = Fraction(1, fps)
                if keyframe_starts and step == 0:
                    video_frame.pict_type = av.video.frame.PictureType.I
                container.mux(stream.encode(video_frame))
            spans.append((t / fps, (t + n) / fps))
            t += n
        container.mux(stream.encode(None))
    return spans


def add_camera(
    store_root: Path,
    episodes: Sequence[tuple[str, str, int]],
    name: str = "front",
    *,
    fps: int = 10,
    codec: str = "libx264",
    file_index: int = 0,
    gop: int = 2,
    keyframe_starts: bool = True,
) -> Path:
    """Pack camera ``name`` of ``episodes`` ((episode id, data file, steps)) into one video
    file of the store and record each one's span in its meta/episodes row."""
    key = f"{IMAGE_PREFIX}{name}"
    relative = VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=file_index)
    spans = encode(
        store_root / relative,
        [n for _, _, n in episodes],
        fps,
        codec,
        gop=gop,
        keyframe_starts=keyframe_starts,
    )
    place = {e: span for (e, _, _), span in zip(episodes, spans, strict=True)}
    for data_file in sorted({f for _, f, _ in episodes}):
        meta = store_root / "meta/episodes" / data_file.removeprefix("data/")
        table = pq.read_table(meta)
        ids = table[EPISODE_ID].to_pylist()
        columns = {
            "chunk_index": [0 if e in place else None for e in ids],
            "file_index": [file_index if e in place else None for e in ids],
            "from_timestamp": [place[e][0] if e in place else None for e in ids],
            "to_timestamp": [place[e][1] if e in place else None for e in ids],
        }
        for field, values in columns.items():
            column = f"videos/{key}/{field}"
            kind = pa.int64() if field.endswith("index") else pa.float64()
            array = pa.array(values, kind)
            if column in table.column_names:
                table = table.set_column(table.column_names.index(column), column, array)
            else:
                table = table.append_column(column, array)
        pq.write_table(table, meta)
    return store_root / relative


def add_review_videos(settings, codec: str = "libx264") -> None:
    """A front and a wrist camera (in ``codec``) for every stored episode of the fleet store
    (seed_fleet_store), and the videos of candidate 3's failure on pick-place seed 35 and its
    champion's (v2) as the evaluation films them (the store's codec, AV1)."""
    with session_scope(settings.db_url) as session:
        stored = session.execute(
            select(Episode.id, Episode.data_file, Episode.steps)
            .where(Episode.status == "ok")
            .order_by(Episode.data_file, Episode.id)
        ).all()
    for index, data_file in enumerate(sorted({f for _, f, _ in stored})):
        mine = [(e, f, n) for e, f, n in stored if f == data_file]
        add_camera(settings.episode_store, mine, codec=codec, file_index=index)
        # a wrist camera as another tool may pack it: a keyframe every 7 frames whatever the
        # episode, so that episodes start mid-GOP
        add_camera(
            settings.episode_store,
            mine,
            "wrist",
            codec=codec,
            file_index=index,
            gop=7,
            keyframe_starts=False,
        )
    for version, shift in (("3", 0), ("2", 20)):
        path = video_path(settings, SUITE, version, "pick-place", 35)
        write_video(path, [frame(step + shift, 0) for step in range(200)])
