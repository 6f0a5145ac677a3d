"""The Parquet episode store, in the LeRobot v3.0 dataset layout plus Flywheel's columns.

```
meta/info.json                          features, shapes, totals, fps, paths
meta/stats.json                         per-feature mean/std/min/max/count
meta/tasks.parquet                      task_index, task
meta/episodes/chunk-000/file-NNN.parquet  one row per episode of data file NNN
data/chunk-000/file-NNN.parquet         one row per step; one file per ingest batch
```

Every file is written under a temporary name and renamed. The SQL index (``episodes``) is
the record of which data files count: a file no row refers to is a crash leftover, and
``remove_orphans`` deletes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
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

CODEBASE_VERSION = "v3.0"
CHUNK = "chunk-000"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STAT_FEATURES = (OBSERVATION_STATE, ACTION)


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    write(tmp)
    os.replace(tmp, path)


class EpisodeStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- writing -----------------------------------------------------------------------------

    def next_file_index(self) -> int:
        existing = [
            int(p.stem.split("-")[1]) for p in (self.root / "data" / CHUNK).glob("file-*.parquet")
        ]
        return max(existing, default=-1) + 1

    def write_batch(
        self, episodes: Sequence[tuple[str, int, Any]], *, first_index: int
    ) -> tuple[str, pa.Table]:
        """Write one data file (and its episodes file) for ``(episode id, episode index, raw)``.

        ``first_index`` is the global frame index of the first step. Returns the data file's
        path relative to the store root and the episodes table.
        """
        tasks = self._tasks({raw.task for _, _, raw in episodes})
        file_index = self.next_file_index()
        relative = DATA_PATH.format(chunk_index=0, file_index=file_index)
        columns: dict[str, list] = {k: [] for k in _DATA_SCHEMA.names}
        episode_rows = []
        index = first_index
        for episode_id, episode_index, raw in episodes:
            n = raw.steps
            columns[OBSERVATION_STATE].append(raw.states)
            columns[ACTION].append(raw.actions)
            columns[TIMESTAMP].append(raw.timestamps.astype(np.float32))
            columns[FRAME_INDEX].append(np.arange(n))
            columns[EPISODE_INDEX].append(np.full(n, episode_index))
            columns[INDEX].append(np.arange(index, index + n))
            columns[TASK_INDEX].append(np.full(n, tasks[raw.task]))
            columns[EPISODE_ID].append(np.full(n, episode_id, dtype=object))
            columns[CONTROL_SOURCE].append(np.asarray(raw.control_source, dtype=object))
            columns[INTERVENTION].append(
                np.asarray(raw.control_source) == CONTROL_OPERATOR
                if raw.kind != "demo"
                else np.zeros(n, dtype=bool)
            )
            columns[POLICY_VERSION].append(np.full(n, raw.policy_version or "", dtype=object))
            columns[ROBOT_ID].append(np.full(n, raw.robot_id, dtype=object))
            episode_rows.append(
                {
                    EPISODE_INDEX: episode_index,
                    EPISODE_ID: episode_id,
                    "tasks": [raw.task],
                    "length": n,
                    "data/chunk_index": 0,
                    "data/file_index": file_index,
                    "dataset_from_index": index,
                    "dataset_to_index": index + n,
                    ROBOT_ID: raw.robot_id,
                    POLICY_VERSION: raw.policy_version or "",
                    "outcome": raw.outcome,
                }
            )
            index += n
        table = _data_table(columns)
        _write_atomic(self.root / relative, lambda p: pq.write_table(table, p))
        episodes_table = pa.Table.from_pylist(episode_rows)
        meta_file = self.root / "meta" / "episodes" / CHUNK / f"file-{file_index:03d}.parquet"
        _write_atomic(meta_file, lambda p: pq.write_table(episodes_table, p))
        return relative, table

    def update_meta(
        self, table: pa.Table, *, total_episodes: int, total_frames: int, fps: float
    ) -> None:
        """Rewrite info.json and merge the batch into stats.json (after the index committed)."""
        stats = self._read_json("meta/stats.json")
        for feature in STAT_FEATURES:
            values = np.stack(table[feature].to_numpy(zero_copy_only=False)).astype(np.float64)
            stats[feature] = _merge_stats(stats.get(feature), values)
        _write_atomic(self.root / "meta/stats.json", lambda p: p.write_text(json.dumps(stats)))
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": "unknown",
            "total_episodes": total_episodes,
            "total_frames": total_frames,
            "total_tasks": len(self._read_tasks()),
            "chunks_size": 1000,
            "fps": fps,
            "splits": {"train": f"0:{total_episodes}"},
            "data_path": DATA_PATH,
            "video_path": None,
            "features": _features(table),
        }
        _write_atomic(
            self.root / "meta/info.json", lambda p: p.write_text(json.dumps(info, indent=2))
        )

    def _tasks(self, needed: set[str]) -> dict[str, int]:
        tasks = self._read_tasks()
        new = sorted(needed - set(tasks))
        if new:
            for name in new:
                tasks[name] = len(tasks)
            frame = pa.table({TASK_INDEX: list(tasks.values()), "task": list(tasks)})
            _write_atomic(self.root / "meta/tasks.parquet", lambda p: pq.write_table(frame, p))
        return tasks

    def _read_tasks(self) -> dict[str, int]:
        path = self.root / "meta/tasks.parquet"
        if not path.exists():
            return {}
        table = pq.read_table(path)
        return dict(zip(table["task"].to_pylist(), table[TASK_INDEX].to_pylist(), strict=True))

    def info(self) -> dict:
        """meta/info.json, or {} before the first batch."""
        return self._read_json("meta/info.json")

    def _read_json(self, relative: str) -> dict:
        path = self.root / relative
        return json.loads(path.read_text()) if path.exists() else {}

    # -- reading and repair ------------------------------------------------------------------

    def read_frames(
        self, episode_ids: Sequence[str], *, data_files: Mapping[str, str | None]
    ) -> pd.DataFrame:
        """Frames of the given episodes, reading only the data files that hold them."""
        by_file: dict[str, list[str]] = {}
        for episode_id in episode_ids:
            data_file = data_files.get(episode_id)
            if data_file is None:
                raise LookupError(f"episode {episode_id} has no frames in the episode store")
            by_file.setdefault(data_file, []).append(episode_id)
        tasks = {i: t for t, i in self._read_tasks().items()}
        parts = []
        for data_file, ids in sorted(by_file.items()):
            table = pq.read_table(self.root / data_file, filters=[(EPISODE_ID, "in", ids)])
            parts.append(table)
        if not parts:
            return pd.DataFrame(columns=[*_DATA_SCHEMA.names, "task"])
        table = pa.concat_tables(parts)
        frame = table.to_pandas()
        frame["task"] = frame[TASK_INDEX].map(tasks)
        return frame

    def data_files(self) -> set[str]:
        return {
            str(p.relative_to(self.root))
            for p in (self.root / "data" / CHUNK).glob("file-*.parquet")
        }

    def remove(self, relative: str) -> None:
        """Delete a data file and its episodes file (never a source log)."""
        (self.root / relative).unlink(missing_ok=True)
        name = Path(relative).name
        (self.root / "meta" / "episodes" / CHUNK / name).unlink(missing_ok=True)

    def remove_orphans(self, referenced: set[str]) -> list[str]:
        """Delete data files no index row refers to (left by a crash); returns them."""
        for partial in self.root.rglob(".*.partial"):
            partial.unlink(missing_ok=True)
        orphans = sorted(self.data_files() - referenced)
        for relative in orphans:
            self.remove(relative)
        return orphans


_DATA_SCHEMA = pa.schema(
    [
        (OBSERVATION_STATE, pa.list_(pa.float32())),
        (ACTION, pa.list_(pa.float32())),
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


def _data_table(columns: dict[str, list]) -> pa.Table:
    arrays = []
    for field in _DATA_SCHEMA:
        parts = columns[field.name]
        if field.name in (OBSERVATION_STATE, ACTION):
            matrix = np.concatenate(parts).astype(np.float32)
            arrays.append(pa.FixedSizeListArray.from_arrays(matrix.reshape(-1), matrix.shape[1]))
        else:
            arrays.append(pa.array(np.concatenate(parts), type=field.type))
    return pa.Table.from_arrays(arrays, names=_DATA_SCHEMA.names)


def _features(table: pa.Table) -> dict[str, Any]:
    features = {}
    for field in table.schema:
        if pa.types.is_fixed_size_list(field.type):
            features[field.name] = {
                "dtype": "float32",
                "shape": [field.type.list_size],
                "names": None,
            }
        else:
            dtype = {"int64": "int64", "float": "float32", "string": "string", "bool": "bool"}
            features[field.name] = {
                "dtype": dtype.get(str(field.type), str(field.type)),
                "shape": [1],
                "names": None,
            }
    return features


def _merge_stats(old: dict | None, values: np.ndarray) -> dict:
    """Combine running statistics with a new batch (Chan et al.'s parallel variance)."""
    n_b, mean_b, var_b = len(values), values.mean(0), values.var(0)
    lo, hi = values.min(0), values.max(0)
    if old:
        n_a, mean_a = old["count"][0], np.asarray(old["mean"])
        var_a = np.asarray(old["std"]) ** 2
        n = n_a + n_b
        delta = mean_b - mean_a
        mean = mean_a + delta * n_b / n
        var = (var_a * n_a + var_b * n_b + delta**2 * n_a * n_b / n) / n
        lo, hi = np.minimum(lo, old["min"]), np.maximum(hi, old["max"])
    else:
        n, mean, var = n_b, mean_b, var_b
    return {
        "mean": mean.tolist(),
        "std": np.sqrt(var).tolist(),
        "min": list(map(float, lo)),
        "max": list(map(float, hi)),
        "count": [int(n)],
    }
