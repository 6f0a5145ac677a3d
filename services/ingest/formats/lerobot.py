"""Import a LeRobot v3.0 dataset (a folder with ``meta/info.json``) as episodes.

The dataset's ``meta/episodes`` rows say which episodes there are and which data file holds
each; data files are read one at a time, so memory holds one data file, never the dataset.
Each episode is a demonstration (the operator in control throughout) unless its frames carry
an ``intervention`` column with a set value: then it is a deployment, and the operator was in
control exactly where ``intervention`` is set (or where a ``control_source`` column says so),
as in datasets recorded with human interventions and in Flywheel's own exports. Kind, outcome,
robot and policy version come from the episode rows where they have them (Flywheel's exports
do); otherwise the outcome is ``success`` when a ``next.success`` frame column is set, else
``unknown``.

Cameras: every ``video`` feature (``observation.images.<name>``) is read from the MP4 files
under ``videos/``, many episodes per file; the episode's row says which file
(``videos/<key>/chunk_index``, ``file_index``) and its span in that file
(``from_timestamp``, ``to_timestamp``), and frame i of the episode is the one at
``from_timestamp + timestamp[i]``, as LeRobot reads it (within its 0.1 ms tolerance). PyAV
seeks to the span and decodes through it once. ``image`` features (PNG or JPEG bytes in the
data files) are read from their column. Either way each camera becomes a ``CameraTrack``
(``tracks.py``); a missing, undecodable or short video makes its episode an error that names
the camera, and the other episodes still import.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.episode_store.parquet import DATA_PATH
from services.episode_store.videos import VIDEO_PATH
from services.episodes.cameras import CameraSpec, CameraTrack, FrameError, Payload, VideoFormat
from services.episodes.model import LogFormatError, RawEpisode, intervention_spans
from services.features import (
    ACTION,
    CONTROL_OPERATOR,
    CONTROL_POLICY,
    CONTROL_SOURCE,
    EPISODE_INDEX,
    EPISODE_KINDS,
    FRAME_INDEX,
    INTERVENTION,
    OBSERVATION_STATE,
    OUTCOMES,
    POLICY_VERSION,
    ROBOT_ID,
    TASK_INDEX,
    TIMESTAMP,
)
from services.ingest.formats.tracks import camera_error, discard, track

SUCCESS = "next.success"
_OPTIONAL = (TASK_INDEX, INTERVENTION, CONTROL_SOURCE, SUCCESS, ROBOT_ID, POLICY_VERSION)
# LeRobot's tolerance between a step's time and its video frame's (``tolerance_s``).
TOLERANCE_NS = 100_000
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}


def read_lerobot(
    root: Path,
    defaults: Mapping[str, Any],
    recorded_at: datetime,
    directory: str | Path | None = None,
    video_format: VideoFormat | None = None,
) -> Iterator[tuple[str, RawEpisode | LogFormatError]]:
    """(``episode_N``, episode or why it cannot be one) per episode; raises for a bad dataset.

    Camera tracks are written under ``directory`` (default: the system's temporary folder) in
    ``video_format`` (default: ``VideoFormat()``).
    """
    info = _info(root)
    cameras = _cameras(info)
    tasks = _tasks(root)
    episodes = _episodes(root)
    by_file: dict[tuple[int, int], list[dict]] = {}
    for row in episodes:
        key = (row["data/chunk_index"], row["data/file_index"])
        by_file.setdefault(key, []).append(row)
    for (chunk, file), rows in sorted(by_file.items()):
        path = root / info.get("data_path", DATA_PATH).format(chunk_index=chunk, file_index=file)
        try:
            frames = _frames(path, [k for k, (_, dtype) in cameras.items() if dtype == "image"])
        except LogFormatError as exc:
            for row in rows:
                yield f"episode_{row[EPISODE_INDEX]}", exc
            continue
        for row in rows:
            name = f"episode_{row[EPISODE_INDEX]}"
            try:
                episode = _episode(row, frames, info, tasks, defaults, recorded_at)
                episode.cameras = _tracks(
                    root, info, row, frames, episode, cameras, (directory, video_format)
                )
            except LogFormatError as exc:
                yield name, exc
            else:
                yield name, episode


def _info(root: Path) -> dict:
    try:
        info = json.loads((root / "meta/info.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LogFormatError(f"meta/info.json is unreadable ({exc})") from exc
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3"):
        raise LogFormatError(f"LeRobot dataset {version or 'of no version'}: Flywheel reads v3.0")
    features = info.get("features", {})
    missing = [f for f in (OBSERVATION_STATE, ACTION) if f not in features]
    if missing:
        raise LogFormatError(f"the dataset has no {' or '.join(missing)} feature")
    if not 0 < float(info.get("fps") or 0) < float("inf"):
        raise LogFormatError(f"meta/info.json has no valid fps ({info.get('fps')!r})")
    return info


def _cameras(info: dict) -> dict[str, tuple[CameraSpec, str]]:
    """Feature key -> (camera, ``video`` or ``image``) for the dataset's camera features."""
    cameras: dict[str, tuple[CameraSpec, str]] = {}
    for key, feature in info.get("features", {}).items():
        dtype = feature.get("dtype") if isinstance(feature, dict) else None
        if dtype not in ("video", "image"):
            continue
        # observation.images.front -> front; LeRobot's older single-camera observation.image
        # -> image.
        name = key.removeprefix("observation.images.").removeprefix("observation.")
        try:
            spec = CameraSpec(name.replace(".", "_"), f"/{key}")
        except ValueError as exc:
            raise LogFormatError(f"feature {key}: {exc}") from exc
        if any(spec.name == other.name for other, _ in cameras.values()):
            raise LogFormatError(f"feature {key}: two camera features are named {spec.name}")
        cameras[key] = (spec, dtype)
    return cameras


def _tasks(root: Path) -> dict[int, str]:
    try:
        table = pq.read_table(root / "meta/tasks.parquet")
    except (OSError, pa.ArrowException) as exc:
        raise LogFormatError(f"meta/tasks.parquet is unreadable ({exc})") from exc
    # LeRobot writes the task text as the pandas index; Flywheel as a "task" column.
    column = "task" if "task" in table.column_names else "__index_level_0__"
    if column not in table.column_names:
        raise LogFormatError("meta/tasks.parquet has no task column")
    return dict(zip(table["task_index"].to_pylist(), table[column].to_pylist(), strict=True))


def _episodes(root: Path) -> list[dict]:
    files = sorted((root / "meta/episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise LogFormatError("zero-length dataset: no meta/episodes files")
    try:
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
    except (OSError, pa.ArrowException) as exc:
        raise LogFormatError(f"meta/episodes is unreadable ({exc})") from exc
    needed = (EPISODE_INDEX, "data/chunk_index", "data/file_index", "length")
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise LogFormatError(f"meta/episodes has no {', '.join(missing)} column")
    keep = [c for c in table.column_names if not c.startswith("stats/")]
    return sorted(table.select(keep).to_pylist(), key=lambda r: r[EPISODE_INDEX])


def _frames(path: Path, images: list[str]) -> dict[str, np.ndarray | pa.Array]:
    """The columns Flywheel uses of one data file, sorted by episode and frame; ``images``
    (camera features stored as images) stay Arrow arrays, read an episode at a time."""
    try:
        schema = pq.read_schema(path)
        columns = [EPISODE_INDEX, FRAME_INDEX, TIMESTAMP, OBSERVATION_STATE, ACTION]
        columns += [c for c in (*_OPTIONAL, *images) if c in schema.names]
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise LogFormatError(f"{path.name}: unreadable data file ({exc})") from exc
    if not _in_order(table):
        table = table.sort_by([(EPISODE_INDEX, "ascending"), (FRAME_INDEX, "ascending")])
    result = {}
    for name in table.column_names:
        column = table[name].combine_chunks()
        if name in images:
            result[name] = column
        elif pa.types.is_fixed_size_list(column.type):
            result[name] = _floats(column.flatten()).reshape(len(column), column.type.list_size)
        elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            sizes = pc.unique(pc.list_value_length(column)).to_pylist()
            if len(sizes) > 1:  # ragged vectors: no single size to report against
                raise LogFormatError(f"{path.name}: {name} vectors differ in size {sorted(sizes)}")
            result[name] = _floats(column.flatten()).reshape(len(column), -1)
        else:
            result[name] = column.to_numpy(zero_copy_only=False)
    return result


def _in_order(table: pa.Table) -> bool:
    """Whether frames already run by episode, then frame (as LeRobot writes them)."""
    if table.num_rows < 2:
        return True
    episode = table[EPISODE_INDEX].to_numpy()
    frame = table[FRAME_INDEX].to_numpy()
    step = np.diff(episode)
    return bool(((step > 0) | ((step == 0) & (np.diff(frame) > 0))).all())


def _floats(values: pa.Array) -> np.ndarray:
    """Vector values as float32, the store's type (LeRobot's too: no copy when they are)."""
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def _episode(row, frames, info, tasks, defaults, recorded_at) -> RawEpisode:
    index = row[EPISODE_INDEX]
    start, end = np.searchsorted(frames[EPISODE_INDEX], [index, index + 1])
    n = int(end - start)
    if n == 0:
        raise LogFormatError(f"zero-length episode: episode {index} has no frames")
    if n != row["length"]:
        raise LogFormatError(f"episode {index} has {n} frames, meta/episodes says {row['length']}")
    cut = {name: values[start:end] for name, values in frames.items()}
    intervention = cut.get(INTERVENTION)
    intervened = intervention is not None and bool(np.asarray(intervention, bool).any())
    kind = row.get("kind") if row.get("kind") in EPISODE_KINDS else None
    kind = kind or ("deployment" if intervened else "demo")
    if kind == "demo":  # the operator drives a demonstration throughout
        sources = [CONTROL_OPERATOR] * n
    elif CONTROL_SOURCE in cut:
        sources = [str(s) for s in cut[CONTROL_SOURCE]]
    elif intervention is not None:
        sources = np.where(np.asarray(intervention, bool), CONTROL_OPERATOR, CONTROL_POLICY)
        sources = sources.tolist()
    else:
        sources = [CONTROL_POLICY] * n
    task_names = row.get("tasks") or [tasks.get(int(i)) for i in cut.get(TASK_INDEX, [])[:1]]
    task = defaults.get("task") or (task_names[0] if task_names else None)
    if not task:
        raise LogFormatError(f"episode {index} names no task")
    return RawEpisode(
        episode_uuid="",
        robot_id=str(
            row.get(ROBOT_ID)
            or _first(cut.get(ROBOT_ID))
            or defaults.get("robot_id")
            or info.get("robot_type")
            or "lerobot"
        ),
        task=str(task),
        policy_version=row.get(POLICY_VERSION) or _first(cut.get(POLICY_VERSION)) or None,
        kind=kind,
        operator_id=defaults.get("operator_id"),
        started_at=recorded_at,
        control_hz=float(row.get("fps") or info["fps"]),
        states=cut[OBSERVATION_STATE],
        actions=cut[ACTION],
        timestamps=np.asarray(cut[TIMESTAMP], dtype=np.float64),
        control_source=sources,
        reasons=[None] * n,
        outcome=_outcome(row, cut),
        interventions=[]
        if kind == "demo"
        else intervention_spans(sources, [None] * n, [], defaults.get("operator_id")),
    )


def _first(values) -> Any:
    return values[0] if values is not None and len(values) else None


def _outcome(row: dict, cut: dict) -> str:
    if row.get("outcome") in OUTCOMES:
        return row["outcome"]
    if SUCCESS in cut and bool(np.asarray(cut[SUCCESS], bool).any()):
        return "success"
    return "unknown"


# -- cameras ------------------------------------------------------------------------------------


def _tracks(root, info, row, frames, episode, cameras, output) -> dict[str, CameraTrack]:
    """The episode's camera tracks; on an error, none are left on disk."""
    index = row[EPISODE_INDEX]
    ticks = np.round(episode.timestamps * 1e9).astype(np.int64)
    tracks: dict[str, CameraTrack] = {}
    try:
        for key, (spec, dtype) in cameras.items():
            if dtype == "video":
                source = _video_frames(root, info, row, key, spec, ticks)
            else:
                start, end = np.searchsorted(frames[EPISODE_INDEX], [index, index + 1])
                if key not in frames:
                    raise camera_error(f"episode {index}", spec.name, f"no {key} column")
                source = _image_frames(frames[key][start:end], ticks)
            tracks[spec.name] = track(spec, source, ticks, episode.control_hz, *output)
    except BaseException:
        discard(tracks)
        raise
    return tracks


def _video_frames(root: Path, info: dict, row: dict, key: str, spec: CameraSpec, ticks):
    """(time on the episode's clock in ns, RGB frame) for the frames of the episode's span."""
    index = row[EPISODE_INDEX]

    def error(why: str) -> LogFormatError:
        return camera_error(f"episode {index}", spec.name, why)

    place = [row.get(f"videos/{key}/{c}") for c in ("chunk_index", "file_index")]
    span = [row.get(f"videos/{key}/{c}") for c in ("from_timestamp", "to_timestamp")]
    if None in place or None in span or not np.isfinite(span).all():
        raise error(f"meta/episodes gives no videos/{key} file and span for it")
    # LeRobot v3.0's default layout, unless the dataset's info.json names another.
    relative = info.get("video_path") or VIDEO_PATH
    relative = relative.format(video_key=key, chunk_index=place[0], file_index=place[1])
    path = root / relative
    if not path.is_file():
        raise error(f"video file {relative} is missing")
    start, end = (float(s) for s in span)
    half = 0.5 / float(info["fps"])  # a frame belongs to the span its middle falls in
    count, first, last = 0, None, None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise error(f"{relative} has no video stream")
            stream = container.streams.video[0]
            if start > half:
                offset = int((start - half) / stream.time_base)
                container.seek(offset, stream=stream, backward=True)
            for frame in container.decode(stream):
                t = frame.time
                if t is None or t < start - half:
                    continue
                if t >= end - half:
                    break
                last = _snap(round((t - start) * 1e9), ticks)
                first = last if first is None else first
                count += 1
                yield last, frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as exc:  # OSError: the file cannot be read
        raise error(f"{relative} is undecodable ({exc.strerror or exc})") from exc
    # LeRobot records videos at the dataset's rate, one frame per step: fewer means the video
    # ends early, or the decoder dropped damaged frames (stale steps that would go unseen).
    if count < len(ticks) or first > ticks[0] or last < ticks[-1]:
        shorter = "" if last is not None and last >= ticks[-1] else " (the video ends early)"
        raise error(
            f"{relative} holds {count} frames in the episode's span {start:.3f}-{end:.3f} s "
            f"for its {len(ticks)} steps{shorter}"
        )


def _snap(time_ns: int, ticks: np.ndarray) -> int:
    """A frame's time, on its step's when within LeRobot's tolerance: float timestamps
    (float32 in the data files) put a step's frame a hair before or after the step."""
    k = int(np.searchsorted(ticks, time_ns - TOLERANCE_NS))
    if k < len(ticks) and abs(int(ticks[k]) - time_ns) <= TOLERANCE_NS:
        return int(ticks[k])
    return time_ns


def _image_frames(column: pa.Array, ticks) -> Iterator[tuple[int, Payload | FrameError]]:
    """(step time in ns, PNG or JPEG payload) for an image feature stored in the data file."""
    for tick, item in zip(ticks.tolist(), column.to_pylist(), strict=True):
        data = item.get("bytes") if isinstance(item, dict) else item
        fmt = next((f for m, f in _IMAGE_MAGIC.items() if (data or b"").startswith(m)), None)
        # An empty or unknown image keeps its step, and the reason, for validation to report.
        yield tick, Payload(fmt, data) if fmt else FrameError("the image is neither PNG nor JPEG")
