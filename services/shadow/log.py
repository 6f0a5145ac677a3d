"""The shadow log: what a shadow policy would have done, step by step, beside what was served.

One Parquet file per robot episode (or part of one), under
``<shadow log>/<shadow version>/<robot id>/<episode uuid>-<part>.parquet``: the robot's
episode id (as its upload names it) and step tie each row to the ingested episode's frame.
Rows: robot, episode, step, task, the version served and its action (the first of the chunk
the robot was answered), the shadow's version and action. Each writer also keeps a small
JSON file of its counts (offered, dropped, failed), so the report can say how much of the
shift the shadow missed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = (
    "robot_id",
    "episode_uuid",
    "step",
    "task",
    "served_version",
    "served_action",
    "shadow_version",
    "shadow_action",
)
SCHEMA = pa.schema(
    [
        ("robot_id", pa.string()),
        ("episode_uuid", pa.string()),
        ("step", pa.int32()),
        ("task", pa.string()),
        ("served_version", pa.string()),
        ("served_action", pa.list_(pa.float32())),
        ("shadow_version", pa.string()),
        ("shadow_action", pa.list_(pa.float32())),
    ]
)
COUNTS_DIR = "_counts"
# Rows a writer holds for one episode before it writes them out as a part.
PART_ROWS = 4096


@dataclass(frozen=True)
class ShadowRecord:
    robot_id: str
    episode_uuid: str
    step: int
    task: str
    served_version: str
    served_action: np.ndarray
    shadow_version: str
    shadow_action: np.ndarray


class ShadowLogWriter:
    """Buffers records per episode; writes an episode's rows when the robot starts another
    episode, when they reach ``PART_ROWS``, and on ``close``. Used from one thread."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._rows: dict[tuple[str, str, str], list[ShadowRecord]] = {}
        self._current: dict[str, tuple[str, str, str]] = {}  # robot -> its episode's key
        self.written = 0
        # Each writer's own counts file: writers of several servers never share one.
        self._name = uuid.uuid4().hex[:12]

    def append(self, record: ShadowRecord) -> None:
        key = (record.shadow_version, record.robot_id, record.episode_uuid)
        previous = self._current.get(record.robot_id)
        if previous is not None and previous != key:  # the robot went on to its next episode
            self._write(previous)
        self._current[record.robot_id] = key
        rows = self._rows.setdefault(key, [])
        rows.append(record)
        if len(rows) >= PART_ROWS:
            self._write(key)

    def flush(self) -> None:
        for key in list(self._rows):
            self._write(key)

    def write_counts(self, version: str, counts: dict[str, int]) -> None:
        path = self.root / version / COUNTS_DIR / f"{self._name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(counts))
        tmp.replace(path)

    def _write(self, key: tuple[str, str, str]) -> None:
        rows = self._rows.pop(key, [])
        if not rows:
            return
        version, robot, episode = key
        table = pa.table(
            {
                "robot_id": [r.robot_id for r in rows],
                "episode_uuid": [r.episode_uuid for r in rows],
                "step": [r.step for r in rows],
                "task": [r.task for r in rows],
                "served_version": [r.served_version for r in rows],
                "served_action": [np.asarray(r.served_action, np.float32) for r in rows],
                "shadow_version": [r.shadow_version for r in rows],
                "shadow_action": [np.asarray(r.shadow_action, np.float32) for r in rows],
            },
            schema=SCHEMA,
        )
        path = self.root / version / robot / f"{episode}-{uuid.uuid4().hex[:8]}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)  # a reader never sees half a file
        self.written += len(rows)


def read_shadow_log(root: Path, version: str) -> pd.DataFrame:
    """Every logged step of shadow ``version``; a step logged twice (a robot that sent it
    again) counts once. Empty (with the columns) when nothing was logged."""
    files = sorted(p for p in (Path(root) / version).glob("*/*.parquet"))
    files = [p for p in files if p.parent.name != COUNTS_DIR]
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    frame = pd.concat([pq.read_table(p).to_pandas() for p in files], ignore_index=True)
    return frame.drop_duplicates(["robot_id", "episode_uuid", "step"], keep="last")


def read_counts(root: Path, version: str) -> dict[str, int]:
    """The shadow's counts summed over every writer that ran it."""
    total: dict[str, int] = {}
    for path in sorted((Path(root) / version / COUNTS_DIR).glob("*.json")):
        for name, value in json.loads(path.read_text()).items():
            total[name] = total.get(name, 0) + int(value)
    return total
