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
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.episode_store.parquet import DATA_PATH
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

SUCCESS = "next.success"
_OPTIONAL = (TASK_INDEX, INTERVENTION, CONTROL_SOURCE, SUCCESS, ROBOT_ID, POLICY_VERSION)


def read_lerobot(
    root: Path, defaults: Mapping[str, Any], recorded_at: datetime
) -> Iterator[tuple[str, RawEpisode | LogFormatError]]:
    """(``episode_N``, episode or why it cannot be one) per episode; raises for a bad dataset."""
    info = _info(root)
    tasks = _tasks(root)
    episodes = _episodes(root)
    by_file: dict[tuple[int, int], list[dict]] = {}
    for row in episodes:
        key = (row["data/chunk_index"], row["data/file_index"])
        by_file.setdefault(key, []).append(row)
    for (chunk, file), rows in sorted(by_file.items()):
        path = root / info.get("data_path", DATA_PATH).format(chunk_index=chunk, file_index=file)
        try:
            frames = _frames(path)
        except LogFormatError as exc:
            for row in rows:
                yield f"episode_{row[EPISODE_INDEX]}", exc
            continue
        for row in rows:
            name = f"episode_{row[EPISODE_INDEX]}"
            try:
                yield name, _episode(row, frames, info, tasks, defaults, recorded_at)
            except LogFormatError as exc:
                yield name, exc


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


def _frames(path: Path) -> dict[str, np.ndarray]:
    """The columns Flywheel uses of one data file, sorted by episode and frame."""
    try:
        schema = pq.read_schema(path)
        columns = [EPISODE_INDEX, FRAME_INDEX, TIMESTAMP, OBSERVATION_STATE, ACTION]
        columns += [c for c in _OPTIONAL if c in schema.names]
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException, KeyError) as exc:
        raise LogFormatError(f"{path.name}: unreadable data file ({exc})") from exc
    if not _in_order(table):
        table = table.sort_by([(EPISODE_INDEX, "ascending"), (FRAME_INDEX, "ascending")])
    result = {}
    for name in table.column_names:
        column = table[name].combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
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
        state_names=_names(info, OBSERVATION_STATE, cut[OBSERVATION_STATE]),
        action_names=_names(info, ACTION, cut[ACTION]),
    )


def _names(info: dict, feature: str, values: np.ndarray) -> tuple[str, ...] | None:
    """The feature's value names in info.json, where it has one string per value (LeRobot
    also allows none, or a dict of axes, which name no single value)."""
    names = info.get("features", {}).get(feature, {}).get("names")
    named = isinstance(names, list) and len(names) == values.shape[1]
    return tuple(names) if named and all(isinstance(n, str) for n in names) else None


def _first(values) -> Any:
    return values[0] if values is not None and len(values) else None


def _outcome(row: dict, cut: dict) -> str:
    if row.get("outcome") in OUTCOMES:
        return row["outcome"]
    if SUCCESS in cut and bool(np.asarray(cut[SUCCESS], bool).any()):
        return "success"
    return "unknown"
