"""The Parquet episode store, in the LeRobot v3.0 dataset layout plus Flywheel's columns.

```
meta/info.json                            features, shapes, totals, fps, paths
meta/stats.json                           per-feature mean/std/min/max/count over the store
meta/tasks.parquet                        task_index, task
meta/episodes/chunk-CCC/file-NNN.parquet  one row per episode of data file CCC/NNN, with stats
data/chunk-CCC/file-NNN.parquet           one row per step; one file per ingest batch
```

Every file is written under a temporary name and renamed. The SQL index (``episodes``) is
the record of which data files count: a file no row refers to is a crash leftover, and
``repair`` deletes it. info.json and stats.json are derived from the per-episode
rows of meta/episodes, so ``write_meta`` can rebuild them after any crash.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.features import (
    ACTION,
    CONTROL_OPERATOR,
    CONTROL_SOURCE,
    EPISODE_ID,
    EPISODE_INDEX,
    FRAME_INDEX,
    INDEX,
    INTERVENTION,
    OBSERVATION_STATE,
    POLICY_VERSION,
    ROBOT_ID,
    TASK_INDEX,
    TIMESTAMP,
)

if TYPE_CHECKING:
    from services.fleetlogs.mcap_reader import RawEpisode

CODEBASE_VERSION = "v3.0"
# Files per chunk folder, as in LeRobot.
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STAT_FEATURES = (OBSERVATION_STATE, ACTION, TIMESTAMP)
STATS = ("mean", "std", "min", "max", "count")


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    write(tmp)
    os.replace(tmp, path)


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

    # -- writing (hold the lock) ---------------------------------------------------------------

    def write_batch(self, episodes: Sequence[tuple[str, int, RawEpisode]]) -> str:
        """Write one data file and its episodes file for ``(episode id, episode index, raw)``.

        Returns the data file's path relative to the store root. All episodes share one
        embodiment: LeRobot's layout gives each feature one shape.
        """
        tasks = self._add_tasks({raw.task for _, _, raw in episodes})
        chunk_index, file_index = self._next_file()
        relative = DATA_PATH.format(chunk_index=chunk_index, file_index=file_index)
        first = self.episodes_meta()
        index = int(pc.max(first["dataset_to_index"]).as_py() or 0) if first.num_rows else 0
        parts, rows = [], []
        for episode_id, episode_index, raw in episodes:
            n = raw.steps
            intervention = np.asarray(raw.control_source) == CONTROL_OPERATOR
            parts.append(
                {
                    OBSERVATION_STATE: raw.states,
                    ACTION: raw.actions,
                    TIMESTAMP: raw.timestamps.astype(np.float32),
                    FRAME_INDEX: np.arange(n),
                    EPISODE_INDEX: np.full(n, episode_index),
                    INDEX: np.arange(index, index + n),
                    TASK_INDEX: np.full(n, tasks[raw.task]),
                    EPISODE_ID: np.full(n, episode_id, dtype=object),
                    CONTROL_SOURCE: np.asarray(raw.control_source, dtype=object),
                    # A demo is all operator by design; only deployments have interventions.
                    INTERVENTION: intervention & (raw.kind != "demo"),
                    POLICY_VERSION: np.full(n, raw.policy_version or "", dtype=object),
                    ROBOT_ID: np.full(n, raw.robot_id, dtype=object),
                }
            )
            rows.append(
                {
                    EPISODE_INDEX: episode_index,
                    EPISODE_ID: episode_id,
                    "tasks": [raw.task],
                    "length": n,
                    "data/chunk_index": chunk_index,
                    "data/file_index": file_index,
                    "dataset_from_index": index,
                    "dataset_to_index": index + n,
                    ROBOT_ID: raw.robot_id,
                    POLICY_VERSION: raw.policy_version or "",
                    "kind": raw.kind,
                    "outcome": raw.outcome,
                    "fps": raw.control_hz,
                    **_episode_stats(raw),
                }
            )
            index += n
        raw0 = episodes[0][2]
        schema = _data_schema(raw0.states.shape[1], raw0.actions.shape[1])
        table = _table(parts, schema)
        _write_atomic(self.root / relative, lambda p: pq.write_table(table, p))
        _write_atomic(
            self._episodes_path(relative), lambda p: pq.write_table(pa.Table.from_pylist(rows), p)
        )
        return relative

    def write_meta(self) -> None:
        """Rewrite info.json and stats.json from the per-episode rows of meta/episodes."""
        episodes = self.episodes_meta()
        if not episodes.num_rows:
            for name in ("meta/info.json", "meta/stats.json"):
                (self.root / name).unlink(missing_ok=True)
            return
        stats = {f: _merge_stats(episodes, f) for f in STAT_FEATURES}
        _write_atomic(self.root / "meta/stats.json", lambda p: p.write_text(json.dumps(stats)))
        first = self.root / DATA_PATH.format(
            chunk_index=episodes["data/chunk_index"][0].as_py(),
            file_index=episodes["data/file_index"][0].as_py(),
        )
        data_bytes = sum((self.root / f).stat().st_size for f in self.data_files())
        total = episodes.num_rows
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": "unknown",
            "total_episodes": total,
            "total_frames": int(pc.sum(episodes["length"]).as_py()),
            "total_tasks": len(self.tasks()),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": round(data_bytes / 2**20, 3),
            "video_files_size_in_mb": 0,
            "fps": Counter(episodes["fps"].to_pylist()).most_common(1)[0][0],
            "splits": {"train": f"0:{total}"},
            "data_path": DATA_PATH,
            "video_path": None,
            "features": _features(pq.read_schema(first)),
        }
        text = json.dumps(info, indent=2)
        _write_atomic(self.root / "meta/info.json", lambda p: p.write_text(text))

    def _add_tasks(self, needed: set[str]) -> dict[str, int]:
        tasks = self.tasks()
        new = sorted(needed - set(tasks))
        if new:
            for name in new:
                tasks[name] = len(tasks)
            table = pa.table({TASK_INDEX: list(tasks.values()), "task": list(tasks)})
            _write_atomic(self.root / "meta/tasks.parquet", lambda p: pq.write_table(table, p))
        return tasks

    def _next_file(self) -> tuple[int, int]:
        used = [_chunk_file(f) for f in self.data_files() | self._episode_files()]
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

    # -- repair --------------------------------------------------------------------------------

    def orphan_files(self, known: set[str]) -> set[str]:
        """Data files (or episodes files without their data) that no index row refers to."""
        return (self.data_files() | self._episode_files()) - set(known)

    def remove(self, relative: str) -> None:
        """Delete a data file and its episodes file (never a source log)."""
        (self.root / relative).unlink(missing_ok=True)
        self._episodes_path(relative).unlink(missing_ok=True)

    def repair(self, known: set[str]) -> list[str]:
        """Undo what a crash left (hold the lock); returns the orphan data files removed.

        Unfinished temp files and data files no index row refers to are deleted, and
        info.json and stats.json are rebuilt when they do not count what meta/episodes holds
        (a crash after the index commit, before ``write_meta``).
        """
        for partial in self.root.rglob(".*.partial"):
            partial.unlink(missing_ok=True)
        orphans = sorted(self.orphan_files(known))
        for relative in orphans:
            self.remove(relative)
        if orphans or self.info().get("total_episodes", 0) != self.episodes_meta().num_rows:
            self.write_meta()
        return orphans


def _chunk_file(relative: str) -> tuple[int, int]:
    chunk, name = Path(relative).parts[-2:]
    return int(chunk.removeprefix("chunk-")), int(name.removeprefix("file-").split(".")[0])


def _table(parts: list[dict[str, np.ndarray]], schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in schema:
        values = np.concatenate([p[field.name] for p in parts])
        if pa.types.is_fixed_size_list(field.type):
            flat = values.astype(np.float32).reshape(-1)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _episode_stats(raw: RawEpisode) -> dict[str, Any]:
    """LeRobot v3's per-episode stats columns: ``stats/<feature>/<mean|std|min|max|count>``."""
    result = {}
    for feature, values in (
        (OBSERVATION_STATE, raw.states),
        (ACTION, raw.actions),
        (TIMESTAMP, raw.timestamps[:, None]),
    ):
        v = values.astype(np.float64)
        computed = (v.mean(0), v.std(0), v.min(0), v.max(0), [len(v)])
        for stat, value in zip(STATS, computed, strict=True):
            result[f"stats/{feature}/{stat}"] = np.asarray(value).tolist()
    return result


def _merge_stats(episodes: pa.Table, feature: str) -> dict[str, list]:
    """Pool per-episode stats into the store's (exact pooled mean and variance)."""
    get = {s: np.asarray(episodes[f"stats/{feature}/{s}"].to_pylist(), float) for s in STATS}
    n = get["count"]  # (E, 1)
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
