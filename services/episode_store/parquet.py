"""The Parquet episode store, in the LeRobot v3.0 dataset layout plus Flywheel's columns.

```
meta/info.json                            features (with names), shapes, totals, fps, paths
meta/stats.json                           mean/std/min/max/count of every numeric feature
meta/tasks.parquet                        task_index, indexed by the task (pandas index)
meta/episodes/chunk-CCC/file-NNN.parquet  one row per episode of data file CCC/NNN, with stats
data/chunk-CCC/file-NNN.parquet           one row per step; one file per ingest batch
videos/<key>/chunk-CCC/file-NNN.mp4       per camera (key observation.images.<name>), the
                                          frames of one ingest batch's episodes, end to end
```

Each episodes file lies at the same chunk and file numbers as its data file, so an episode's
``meta/episodes/chunk_index`` and ``file_index`` equal its ``data/`` ones.

Camera frames (``videos.py``): each episode's camera comes in as its own MP4 track, one frame
per step; ``write_batch`` remuxes the batch's tracks of a camera into one file (no
re-encoding), and the episode's row in meta/episodes says where its frames are:
``videos/<key>/chunk_index``, ``file_index``, ``from_timestamp`` and ``to_timestamp``
(seconds in that file; step i is the frame at from_timestamp + i / fps). Episodes whose
tracks differ in rate or codec header go to separate files of the batch. Every episode of a
store has the same cameras at the same resolution (LeRobot gives a feature one shape);
``write_batch`` refuses any other.

Every file is written under a temporary name and renamed: a batch's video files first, then
its data file, then its episodes file. The SQL index (``episodes``) is the record of which
data files count: a file no row refers to is a crash leftover, and ``repair`` deletes it, with
the video files its episodes file names; a video file no row of meta/episodes names is a
leftover too. info.json and stats.json are derived from the per-episode rows of
meta/episodes, so ``write_meta`` can rebuild them after any crash.

Deleting episodes (``drop_episodes``) rewrites the files they share with others, without
their rows and frames: the others keep every value, their indices included, so the store's
numbering has gaps afterwards (an export renumbers from 0). A video file is rewritten under a
new number (the kept episodes end to end, their timestamps updated), the episodes file is
renamed over the old one to point at it, and only then is the old video file deleted: a crash
at any point leaves whole files, and the old or the new video a leftover. See
docs/data-retention.md.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.episode_store.videos import (
    CLIPS,
    VIDEO_PATH,
    Span,
    Stream,
    camera_reason,
    cut,
    pack,
    video_feature,
    video_keys,
    videos_named,
)
from services.episodes.model import RawEpisode
from services.features import (
    ACTION,
    CONTROL_OPERATOR,
    CONTROL_SOURCE,
    EPISODE_ID,
    EPISODE_INDEX,
    FRAME_INDEX,
    IMAGE_PREFIX,
    INDEX,
    INTERVENTION,
    OBSERVATION_STATE,
    POLICY_VERSION,
    ROBOT_ID,
    TASK_INDEX,
    TIMESTAMP,
)

CODEBASE_VERSION = "v3.0"
# Files per chunk folder, as in LeRobot.
CHUNKS_SIZE = 1000
# LeRobot's sizes at which a writer starts a new data (uncompressed Parquet) or video file;
# info.json's data_files_size_in_mb and video_files_size_in_mb say the largest a file may be.
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 500
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
# Every numeric column of the data files: LeRobot keeps stats of each (strings have none).
STAT_FEATURES = (
    OBSERVATION_STATE,
    ACTION,
    TIMESTAMP,
    FRAME_INDEX,
    EPISODE_INDEX,
    INDEX,
    TASK_INDEX,
    INTERVENTION,
)
STATS = ("mean", "std", "min", "max", "count")
# Per-episode columns of meta/episodes naming the values of the vector features.
NAME_COLUMNS = {OBSERVATION_STATE: "state_names", ACTION: "action_names"}
# meta/episodes columns of a camera: videos/<key>/<column>.
# Ingest's camera tracks wait here, one folder per ingest, until they are packed.
SPOOL = ".spool"
VIDEO_COLUMNS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


def _write_atomic(path: Path, write):
    """``write(temporary path)``, renamed to ``path``; returns what ``write`` returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    result = write(tmp)
    os.replace(tmp, path)
    return result


def _data_schema(state_dim: int, action_dim: int) -> pa.Schema:
    return pa.schema(
        [
            (OBSERVATION_STATE, pa.list_(pa.float32(), state_dim)),
            (ACTION, pa.list_(pa.float32(), action_dim)),
            (TIMESTAMP, pa.float32()),
            (FRAME_INDEX, pa.int64()),
            (EPISODE_INDEX, pa.int64()),
            (INDEX, pa.int64()),
            (TASK_INDEX, pa.int64()),
            (EPISODE_ID, pa.string()),
            (CONTROL_SOURCE, pa.string()),
            (INTERVENTION, pa.bool_()),
            (POLICY_VERSION, pa.string()),
            (ROBOT_ID, pa.string()),
        ]
    )


class EpisodeStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time (two nightly runs at once wait for each other), on one host."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @contextmanager
    def spool(self) -> Iterator[Path]:
        """A folder under ``.spool/`` for one ingest's camera tracks until they are packed;
        removed afterwards, and by ``repair`` when the ingest that made it died (its owner
        lock is free then)."""
        base = self.root / SPOOL
        base.mkdir(parents=True, exist_ok=True)
        while True:
            folder = Path(tempfile.mkdtemp(dir=base))
            try:
                owner = open(folder / ".owner", "w")  # noqa: SIM115 (held until the end)
            except FileNotFoundError:
                continue  # a repair took the new folder for a dead ingest's: another one
            fcntl.flock(owner, fcntl.LOCK_EX)
            if folder.exists():
                break
            owner.close()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            owner.close()

    def _remove_dead_spools(self) -> None:
        """Spool folders whose ingest died: their owner lock is free (the system frees a
        process's locks when it ends). Removed while holding that lock."""
        for folder in sorted((self.root / SPOOL).glob("*/")):
            try:
                with open(folder / ".owner", "a") as owner:
                    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    shutil.rmtree(folder, ignore_errors=True)
            except (BlockingIOError, FileNotFoundError):
                continue  # an ingest running now, or a folder gone meanwhile

    # -- writing (hold the lock) ---------------------------------------------------------------

    def write_batch(
        self,
        episodes: Sequence[tuple[str, int, RawEpisode]],
        *,
        episode_columns: Mapping[str, list] | None = None,
    ) -> str:
        """Write one data file and its episodes file for ``(episode id, episode index, raw)``.

        Returns the data file's path relative to the store root. All episodes share one
        embodiment: LeRobot's layout gives each feature one shape; so they share the store's
        cameras and their resolution too (``ValueError`` otherwise, and for a camera track
        with no video, which validation quarantines before it gets here). The episodes'
        camera tracks are packed into the batch's video files; the tracks stay where they
        are (ingest discards them). ``episode_columns``
        adds columns to meta/episodes, one value per episode (an export's camera columns).
        """
        streams = self._check_cameras(episodes)
        tasks = self._add_tasks({raw.task for _, _, raw in episodes})
        chunk_index, file_index = self._next_file()
        relative = DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        first = self.episodes_meta()
        index = int(pc.max(first["dataset_to_index"]).as_py() or 0) if first.num_rows else 0
        raws = [raw for _, _, raw in episodes]
        lengths = np.array([raw.steps for raw in raws], dtype=np.int64)
        starts = np.r_[0, np.cumsum(lengths)[:-1]]
        total = int(lengths.sum())
        states = np.concatenate([raw.states for raw in raws]).astype(np.float32, copy=False)
        actions = np.concatenate([raw.actions for raw in raws]).astype(np.float32, copy=False)
        timestamps = np.concatenate([raw.timestamps for raw in raws])
        # Per step, which episode of the batch it belongs to: one value per episode is spread
        # over its steps with a take, not built step by step.
        owner = pa.array(np.repeat(np.arange(len(raws)), lengths))
        sources = list(itertools.chain.from_iterable(raw.control_source for raw in raws))
        is_demo = np.repeat([raw.kind == "demo" for raw in raws], lengths)
        columns = {
            OBSERVATION_STATE: pa.FixedSizeListArray.from_arrays(
                states.reshape(-1), states.shape[1]
            ),
            ACTION: pa.FixedSizeListArray.from_arrays(actions.reshape(-1), actions.shape[1]),
            TIMESTAMP: pa.array(timestamps.astype(np.float32)),
            FRAME_INDEX: pa.array(np.arange(total) - np.repeat(starts, lengths)),
            EPISODE_INDEX: pa.array(np.repeat([i for _, i, _ in episodes], lengths)),
            INDEX: pa.array(np.arange(index, index + total)),
            TASK_INDEX: pa.array(np.repeat([tasks[raw.task] for raw in raws], lengths)),
            EPISODE_ID: _spread([episode_id for episode_id, _, _ in episodes], owner),
            CONTROL_SOURCE: pa.array(sources, pa.string()),
            # A demo is all operator by design; only deployments have interventions.
            INTERVENTION: pa.array((np.asarray(sources) == CONTROL_OPERATOR) & ~is_demo),
            POLICY_VERSION: _spread([raw.policy_version or "" for raw in raws], owner),
            ROBOT_ID: _spread([raw.robot_id for raw in raws], owner),
        }
        schema = _data_schema(states.shape[1], actions.shape[1])
        table = pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)
        rows = {
            EPISODE_INDEX: [i for _, i, _ in episodes],
            EPISODE_ID: [episode_id for episode_id, _, _ in episodes],
            "tasks": [[raw.task] for raw in raws],
            "length": lengths.tolist(),
            "data/chunk_index": [chunk_index] * len(raws),
            "data/file_index": [file_index] * len(raws),
            "dataset_from_index": (index + starts).tolist(),
            "dataset_to_index": (index + starts + lengths).tolist(),
            "meta/episodes/chunk_index": [chunk_index] * len(raws),
            "meta/episodes/file_index": [file_index] * len(raws),
            ROBOT_ID: [raw.robot_id for raw in raws],
            POLICY_VERSION: [raw.policy_version or "" for raw in raws],
            "kind": [raw.kind for raw in raws],
            "outcome": [raw.outcome for raw in raws],
            "fps": [raw.control_hz for raw in raws],
            "state_names": [_list(raw.state_names) for raw in raws],
            "action_names": [_list(raw.action_names) for raw in raws],
        }
        for feature in STAT_FEATURES:
            values = table[feature].combine_chunks()
            if pa.types.is_fixed_size_list(values.type):
                matrix = values.flatten().to_numpy().reshape(total, -1)
            else:
                matrix = values.to_numpy(zero_copy_only=False).astype(np.float64)[:, None]
            rows.update(_episode_stats(feature, matrix, starts, lengths))
        written: list[Path] = []
        try:
            rows.update(self._write_videos(episodes, streams, written))
            rows.update(episode_columns or {})
            meta = pa.table(rows)
            if not any(r.state_names or r.action_names for r in raws):  # typed, though null
                for column in NAME_COLUMNS.values():
                    at = meta.schema.get_field_index(column)
                    meta = meta.set_column(at, column, pa.nulls(len(raws), pa.list_(pa.string())))
            _write_atomic(self.root / relative, lambda p: _write_parquet(table, p))
            written.append(self.root / relative)
            _write_atomic(self._episodes_path(relative), lambda p: pq.write_table(meta, p))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return relative

    def _check_cameras(self, episodes: Sequence[tuple[str, int, RawEpisode]]) -> list[dict]:
        """Each episode's cameras as ``{key: Stream}``; refuses a batch that would give the
        store two shapes of a camera, or a track with no video."""
        expected = self.cameras()
        found = []
        for episode_id, _, raw in episodes:
            for name, track in raw.cameras.items():
                if track.path is None:
                    raise ValueError(
                        f"episode {episode_id}: camera {name} has no video (its frames could "
                        "not make one); validation quarantines such an episode before it is "
                        "stored"
                    )
            streams = {IMAGE_PREFIX + n: Stream.of(t.path) for n, t in raw.cameras.items()}
            shapes = {key: (s.width, s.height) for key, s in streams.items()}
            if expected is None:
                expected = shapes  # the first episode of a new store sets them
            reason = camera_reason(shapes, expected)
            if reason is not None:
                raise ValueError(f"episode {episode_id}: {reason}")
            found.append(streams)
        return found

    def _write_videos(
        self,
        episodes: Sequence[tuple[str, int, RawEpisode]],
        streams: list[dict[str, Stream]],
        written: list[Path],
    ) -> dict[str, list]:
        """Pack the episodes' tracks into video files, per camera; returns their meta/episodes
        columns (where each episode's frames are, and their image statistics)."""
        columns: dict[str, list] = {}
        for key in sorted(streams[0]) if streams else ():
            name = key.removeprefix(IMAGE_PREFIX)
            tracks = [raw.cameras[name] for _, _, raw in episodes]
            # Files are joined only when the rate and the codec's header match: normally the
            # whole batch.
            groups: dict[tuple, list[int]] = {}
            for i, track in enumerate(tracks):
                groups.setdefault((track.fps, streams[i][key].extradata), []).append(i)
            places: list[tuple] = [()] * len(tracks)
            stats: list[dict] = [{}] * len(tracks)
            number = self._next_video(key)
            for (fps, _), members in groups.items():
                chunk_index, file_index = divmod(number, CHUNKS_SIZE)
                number += 1
                relative = VIDEO_PATH.format(
                    video_key=key, chunk_index=chunk_index, file_index=file_index
                )
                paths = [tracks[i].path for i in members]
                spans, sampled = _write_atomic(self.root / relative, partial(pack, paths, fps))
                written.append(self.root / relative)
                for i, span, stat in zip(members, spans, sampled, strict=True):
                    episode_id, _, raw = episodes[i]
                    if span.frames != raw.steps:
                        raise ValueError(
                            f"episode {episode_id}: camera {name} has {span.frames} frames for "
                            f"{raw.steps} steps; a track holds one frame per step"
                        )
                    places[i] = (chunk_index, file_index, span.from_timestamp, span.to_timestamp)
                    stats[i] = stat
            for column, values in zip(VIDEO_COLUMNS, zip(*places, strict=True), strict=True):
                columns[f"videos/{key}/{column}"] = list(values)
            for stat in STATS:
                columns[f"stats/{key}/{stat}"] = [s[stat] for s in stats]
        return columns

    def _next_video(self, key: str) -> int:
        used = [chunk_file(str(p)) for p in self.root.glob(f"videos/{key}/chunk-*/file-*.mp4")]
        return max((c * CHUNKS_SIZE + f for c, f in used), default=-1) + 1

    def write_meta(self, *, robot_type: str | None = None) -> None:
        """Rewrite info.json and stats.json from the per-episode rows of meta/episodes.

        ``robot_type`` defaults to what info.json says now, so a rewrite keeps it.
        """
        episodes = self.episodes_meta()
        if not episodes.num_rows:
            for name in ("meta/info.json", "meta/stats.json"):
                (self.root / name).unlink(missing_ok=True)
            return
        if robot_type is None:
            robot_type = self.info().get("robot_type")
        keys = video_keys(episodes)
        stats = {
            feature: merge_stats(episodes, feature)
            for feature in _stat_features(episodes)
            if feature in STAT_FEATURES or feature in keys
        }
        _write_atomic(self.root / "meta/stats.json", lambda p: p.write_text(json.dumps(stats)))
        first = self.root / DATA_PATH.format(
            chunk_index=episodes["data/chunk_index"][0].as_py(),
            file_index=episodes["data/file_index"][0].as_py(),
        )
        features = _features(pq.read_schema(first))
        for feature, column in NAME_COLUMNS.items():
            features[feature]["names"] = _shared_names(episodes, column)
        data_mb = max((_uncompressed_mb(self.root / f) for f in self.data_files()), default=0)
        videos = videos_named(episodes)
        video_mb = max(((self.root / f).stat().st_size / 2**20 for f in videos), default=0)
        total = episodes.num_rows
        fps = Counter(episodes["fps"].to_pylist()).most_common(1)[0][0]
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": robot_type,
            "total_episodes": total,
            "total_frames": int(pc.sum(episodes["length"]).as_py()),
            "total_tasks": len(self.tasks()),
            "chunks_size": CHUNKS_SIZE,
            # The largest a file may be: LeRobot's limit, or the largest file where one is over.
            "data_files_size_in_mb": max(DATA_FILE_SIZE_MB, math.ceil(data_mb)),
            "video_files_size_in_mb": max(VIDEO_FILE_SIZE_MB, math.ceil(video_mb)),
            "fps": int(fps) if float(fps).is_integer() else fps,
            "splits": {"train": f"0:{total}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if keys else None,
            "features": features,
        }
        for key in keys:
            # The store's cameras share one shape (write_batch refuses others): one file says it.
            stream = Stream.of(self.root / next(f for f in sorted(videos) if f"/{key}/" in f))
            info["features"][key] = video_feature(stream, fps)
        text = json.dumps(info, indent=2)
        _write_atomic(self.root / "meta/info.json", lambda p: p.write_text(text))

    def _add_tasks(self, needed: set[str]) -> dict[str, int]:
        tasks = self.tasks()
        new = sorted(needed - set(tasks))
        if new:
            for name in new:
                tasks[name] = len(tasks)
            # LeRobot reads tasks.parquet with pandas, the task as the index.
            frame = pd.DataFrame(
                {TASK_INDEX: list(tasks.values())}, index=pd.Index(list(tasks), name="task")
            )
            _write_atomic(self.root / "meta/tasks.parquet", frame.to_parquet)
        return tasks

    def _next_file(self) -> tuple[int, int]:
        used = [chunk_file(f) for f in self.data_files() | self._episode_files()]
        number = max((c * CHUNKS_SIZE + f for c, f in used), default=-1) + 1
        return divmod(number, CHUNKS_SIZE)

    # -- reading -------------------------------------------------------------------------------

    def tasks(self) -> dict[str, int]:
        path = self.root / "meta/tasks.parquet"
        if not path.exists():
            return {}
        table = pq.read_table(path)
        return dict(zip(table["task"].to_pylist(), table[TASK_INDEX].to_pylist(), strict=True))

    def info(self) -> dict:
        """meta/info.json, or {} before the first batch."""
        path = self.root / "meta/info.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def dims(self) -> tuple[int, int] | None:
        """The store's (state_dim, action_dim), or None while it is empty."""
        features = self.info().get("features", {})
        if OBSERVATION_STATE not in features:
            return None
        return features[OBSERVATION_STATE]["shape"][0], features[ACTION]["shape"][0]

    def cameras(self) -> dict[str, tuple[int, int]] | None:
        """The store's cameras, ``{key: (width, height)}``, or None while it is empty."""
        features = self.info().get("features")
        if features is None:
            return None
        return {
            key: (feature["shape"][1], feature["shape"][0])
            for key, feature in features.items()
            if feature.get("dtype") == "video"
        }

    def video_files(self) -> set[str]:
        return {
            str(p.relative_to(self.root)) for p in self.root.glob("videos/*/chunk-*/file-*.mp4")
        }

    def read_frames(
        self, episode_ids: Sequence[str], *, data_files: Mapping[str, str | None] | None = None
    ) -> pd.DataFrame:
        """Frames of the given episodes, reading only the data files that hold them.

        ``data_files`` maps episode id to data file (the SQL index has it); without it the
        store's episodes metadata says where each episode is.
        """
        if data_files is None:
            meta = self.episodes_meta()
            data_files = (
                {
                    episode_id: DATA_PATH.format(chunk_index=chunk, file_index=file)
                    for episode_id, chunk, file in zip(
                        meta[EPISODE_ID].to_pylist(),
                        meta["data/chunk_index"].to_pylist(),
                        meta["data/file_index"].to_pylist(),
                        strict=True,
                    )
                }
                if meta.num_rows
                else {}
            )
        by_file: dict[str, list[str]] = {}
        for episode_id in episode_ids:
            data_file = data_files.get(episode_id)
            if data_file is None:
                raise LookupError(f"episode {episode_id} has no frames in the episode store")
            by_file.setdefault(data_file, []).append(episode_id)
        parts = [
            pq.read_table(self.root / f, filters=[(EPISODE_ID, "in", ids)])
            for f, ids in sorted(by_file.items())
        ]
        if not parts:
            return pd.DataFrame(columns=[*_data_schema(1, 1).names, "task"])
        frame = pa.concat_tables(parts).to_pandas()
        names = {i: t for t, i in self.tasks().items()}
        frame["task"] = frame[TASK_INDEX].map(names)
        return frame

    def data_files(self) -> set[str]:
        return {
            str(p.relative_to(self.root)) for p in self.root.glob("data/chunk-*/file-*.parquet")
        }

    def _episode_files(self) -> set[str]:
        """The data files that meta/episodes describes (same chunk and file names)."""
        return {
            f"data/{p.relative_to(self.root / 'meta/episodes').as_posix()}"
            for p in self.root.glob("meta/episodes/chunk-*/file-*.parquet")
        }

    def episodes_meta(self) -> pa.Table:
        """Every row of meta/episodes: one per episode, with its file, labels and stats."""
        tables = [pq.read_table(self._episodes_path(f)) for f in sorted(self._episode_files())]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})

    def _episodes_path(self, data_file: str) -> Path:
        return self.root / "meta/episodes" / data_file.removeprefix("data/")

    # -- deleting (hold the lock) --------------------------------------------------------------

    def files_holding(self, episode_ids: set[str]) -> list[str]:
        """The data and video files that hold frames of any of ``episode_ids``, per
        meta/episodes."""
        files = set()
        for relative in self._episode_files():
            path = self._episodes_path(relative)
            names = pq.read_schema(path).names
            held = pq.read_table(
                path, columns=[n for n in names if n.startswith("videos/")] + [EPISODE_ID]
            )
            mine = pc.is_in(held[EPISODE_ID], value_set=pa.array(sorted(episode_ids), pa.string()))
            if pc.any(mine).as_py():
                files.add(relative)
                files.update(videos_named(held.filter(mine)))
        return sorted(files)

    def drop_episodes(self, episode_ids: set[str]) -> list[str]:
        """Rewrite every data file holding any of ``episode_ids`` without them, and every
        video file holding their frames; returns the files rewritten (or removed, when nothing
        else was in them).

        Each data file is written under a temporary name and renamed over the old one, the
        data file before its episodes file; a video file is written again under a new number
        before both, and the old one deleted after them. A crash leaves every file whole, old
        or new (a video named by no row is a leftover ``repair`` removes), and running this
        again finishes the job (``repair`` does, from the tombstones).
        """
        for episode_id in episode_ids:  # the review pages' clips of them go first
            for clip in (self.root / CLIPS).glob(f"*/{episode_id}-*.mp4"):
                clip.unlink(missing_ok=True)
        files = self.files_holding(episode_ids)
        for relative in files:
            if relative.startswith("data/"):
                self._rewrite_without(relative, episode_ids)
        if files:
            self.write_meta()
        return files

    def _rewrite_without(self, relative: str, episode_ids: set[str]) -> None:
        gone = pa.array(sorted(episode_ids), pa.string())
        episodes = pq.read_table(self._episodes_path(relative))
        keep = pc.invert(pc.is_in(episodes[EPISODE_ID], value_set=gone))
        if not pc.any(keep).as_py():
            self.remove(relative)
            return
        kept_rows = episodes.filter(keep)
        replaced: list[str] = []
        for key in video_keys(episodes):
            kept_rows = self._cut_videos(key, kept_rows, episodes.filter(pc.invert(keep)), replaced)
        data = pq.read_table(self.root / relative)
        kept = data.filter(pc.invert(pc.is_in(data[EPISODE_ID], value_set=gone)))
        _write_atomic(self.root / relative, lambda p: _write_parquet(kept, p))
        _write_atomic(self._episodes_path(relative), lambda p: pq.write_table(kept_rows, p))
        # Only now that no row names them: the old files, with the deleted frames.
        for old in replaced:
            (self.root / old).unlink(missing_ok=True)

    def _cut_videos(
        self, key: str, kept: pa.Table, dropped: pa.Table, replaced: list[str]
    ) -> pa.Table:
        """Write each of ``key``'s video files that holds a dropped episode again under a new
        number, with only the kept episodes' frames; returns ``kept`` pointing at them."""
        prefix = f"videos/{key}/"
        columns = {c: kept[prefix + c].to_pylist() for c in VIDEO_COLUMNS}
        places = list(zip(columns["chunk_index"], columns["file_index"], strict=True))
        doomed = set(
            zip(*(dropped[prefix + c].to_pylist() for c in VIDEO_COLUMNS[:2]), strict=True)
        )
        number = self._next_video(key)
        for chunk_index, file_index in sorted(doomed):
            old = VIDEO_PATH.format(video_key=key, chunk_index=chunk_index, file_index=file_index)
            replaced.append(old)
            rows = sorted(
                (i for i, place in enumerate(places) if place == (chunk_index, file_index)),
                key=lambda i: columns["from_timestamp"][i],
            )
            if not rows:
                continue
            new_chunk, new_file = divmod(number, CHUNKS_SIZE)
            number += 1
            new = VIDEO_PATH.format(video_key=key, chunk_index=new_chunk, file_index=new_file)
            spans = [
                Span(
                    columns["from_timestamp"][i],
                    columns["to_timestamp"][i],
                    kept["length"][i].as_py(),
                )
                for i in rows
            ]
            fps = Fraction(kept["fps"][rows[0]].as_py()).limit_denominator(1001)
            moved = _write_atomic(self.root / new, partial(cut, self.root / old, spans, fps))
            for i, span in zip(rows, moved, strict=True):
                columns["chunk_index"][i], columns["file_index"][i] = new_chunk, new_file
                columns["from_timestamp"][i] = span.from_timestamp
                columns["to_timestamp"][i] = span.to_timestamp
        for column, values in columns.items():
            name = prefix + column
            kept = kept.set_column(
                kept.schema.get_field_index(name),
                kept.schema.field(name),
                pa.array(values, kept[name].type),
            )
        return kept

    # -- repair --------------------------------------------------------------------------------

    def orphan_files(self, known: set[str]) -> set[str]:
        """Data files (or episodes files without their data) that no index row refers to."""
        return (self.data_files() | self._episode_files()) - set(known)

    def remove(self, relative: str) -> None:
        """Delete a data file, its episodes file and the video files that names (never a
        source log). The videos go last: a crash before leaves them named by no row, which
        ``repair`` removes."""
        episodes = self._episodes_path(relative)
        videos = videos_named(pq.read_table(episodes)) if episodes.exists() else set()
        (self.root / relative).unlink(missing_ok=True)
        episodes.unlink(missing_ok=True)
        for video in videos:
            (self.root / video).unlink(missing_ok=True)

    def repair(self, known: set[str]) -> list[str]:
        """Undo what a crash left (hold the lock); returns the orphan data and video files
        removed.

        Unfinished temp files, data files no index row refers to, video files no row of
        meta/episodes names and spool folders of ingests that died are deleted, and
        info.json and stats.json are rebuilt when they do not count what meta/episodes holds
        (a crash after the index commit, before ``write_meta``).
        """
        for leftover in self.root.rglob(".*.partial"):
            leftover.unlink(missing_ok=True)
        orphans = sorted(self.orphan_files(known))
        for relative in orphans:
            self.remove(relative)
        # Video files written before a crash kept their batch's episodes file from being
        # written, or left over by a deletion: no row of meta/episodes names them.
        videos = sorted(self.video_files() - videos_named(self.episodes_meta()))
        for relative in videos:
            (self.root / relative).unlink()
        orphans += videos
        self._remove_dead_spools()
        if orphans or self.info().get("total_episodes", 0) != self.episodes_meta().num_rows:
            self.write_meta()
        return orphans


def chunk_file(relative: str) -> tuple[int, int]:
    """A data, episodes or video file's (chunk index, file index), from its path."""
    chunk, name = Path(relative).parts[-2:]
    return int(chunk.removeprefix("chunk-")), int(name.removeprefix("file-").split(".")[0])


def _vectors(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(values.reshape(-1), values.shape[1])


def _spread(values: list[str], owner: pa.Array) -> pa.Array:
    """One string per episode, repeated over the episode's steps."""
    return pc.take(pa.array(values, pa.string()), owner)


def _write_parquet(table: pa.Table, path: Path) -> None:
    # Dictionary encoding only where values repeat: tried on float vectors it costs more time
    # than the rest of the write and saves nothing (and the file reads back slower).
    repeating = [f.name for f in table.schema if not pa.types.is_floating(_value_type(f.type))]
    pq.write_table(table, path, use_dictionary=repeating)


def _value_type(field_type: pa.DataType) -> pa.DataType:
    return field_type.value_type if pa.types.is_fixed_size_list(field_type) else field_type


def _episode_stats(
    feature: str, values: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> dict[str, list]:
    """LeRobot v3's per-episode stats columns, ``stats/<feature>/<mean|std|min|max|count>``,
    for episodes lying end to end in ``values`` (each at least one step)."""
    counts = lengths[:, None].astype(np.float64)
    mean = np.add.reduceat(values, starts, axis=0, dtype=np.float64) / counts
    # E[x^2] - mean^2 in float64: exact enough for float32 values, and one pass fewer than
    # centring them first.
    square = np.add.reduceat(np.square(values, dtype=np.float64), starts, axis=0) / counts
    computed = (
        mean,
        np.sqrt(np.maximum(square - mean**2, 0.0)),
        np.minimum.reduceat(values, starts, axis=0).astype(np.float64),
        np.maximum.reduceat(values, starts, axis=0).astype(np.float64),
        lengths[:, None],
    )
    return {
        f"stats/{feature}/{stat}": value.tolist()
        for stat, value in zip(STATS, computed, strict=True)
    }


def _stat_features(episodes: pa.Table) -> list[str]:
    """The features every episode of meta/episodes has stats of (a store written before a
    feature had stats lacks them on its older rows)."""
    features = []
    for name in episodes.column_names:
        if name.startswith("stats/") and name.endswith("/count"):
            feature = name.removeprefix("stats/").removesuffix("/count")
            columns = [f"stats/{feature}/{s}" for s in STATS]
            if all(c in episodes.column_names and not episodes[c].null_count for c in columns):
                features.append(feature)
    return features


def merge_stats(episodes: pa.Table, feature: str) -> dict[str, list]:
    """Pool per-episode stats into the store's (exact pooled mean and variance); a camera's
    stats are per channel, shape (3, 1, 1), as LeRobot keeps them."""
    get = {s: np.asarray(episodes[f"stats/{feature}/{s}"].to_pylist(), float) for s in STATS}
    # Counts (E, 1) against values (E, ...): an image's stats are (E, 3, 1, 1).
    n = get["count"].reshape(len(get["count"]), *[1] * (get["mean"].ndim - 1))
    total = n.sum()
    mean = (get["mean"] * n).sum(0) / total
    second = ((get["std"] ** 2 + get["mean"] ** 2) * n).sum(0) / total
    return {
        "mean": mean.tolist(),
        "std": np.sqrt(np.maximum(second - mean**2, 0.0)).tolist(),
        "min": get["min"].min(0).tolist(),
        "max": get["max"].max(0).tolist(),
        "count": [int(total)],
    }


def _list(names: Sequence[str] | None) -> list[str] | None:
    return None if names is None else list(names)


def _shared_names(episodes: pa.Table, column: str) -> list[str] | None:
    """A vector feature's value names: the ones every episode logged, else None (LeRobot's
    "no names") where some did not name them or two named them differently."""
    if column not in episodes.column_names:
        return None
    named = {tuple(n) if n is not None else None for n in episodes[column].to_pylist()}
    only = named.pop() if len(named) == 1 else None
    return list(only) if only else None


def _uncompressed_mb(path: Path) -> float:
    """A Parquet file's size as LeRobot measures it against its limit: uncompressed."""
    meta = pq.read_metadata(path)
    groups = (meta.row_group(g) for g in range(meta.num_row_groups))
    return sum(g.total_byte_size for g in groups) / 2**20


def _features(schema: pa.Schema) -> dict[str, Any]:
    dtypes = {"int64": "int64", "float": "float32", "string": "string", "bool": "bool"}
    features = {}
    for field in schema:
        if pa.types.is_fixed_size_list(field.type):
            features[field.name] = {"dtype": "float32", "shape": [field.type.list_size]}
        else:
            features[field.name] = {"dtype": dtypes.get(str(field.type), str(field.type))}
            features[field.name]["shape"] = [1]
        features[field.name]["names"] = None
    return features
