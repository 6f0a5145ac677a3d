"""Export the episode store, or a slice of it, as a standalone LeRobot v3.0 dataset.

The store already has the LeRobot layout; an export rewrites the chosen episodes through the
same writer (``EpisodeStore.write_batch``), renumbered from 0, so that the dataset is whole on
its own: its own tasks, indices, per-episode stats, info.json and stats.json. Flywheel's extra
columns (``intervention``, ``control_source``, ``policy_version``, ``robot_id``) and per-episode
``kind`` and ``outcome`` go with it, so importing it back restores the same episodes. One
source data file is read at a time. The dataset is written under a temporary name beside the
destination and renamed when complete, so a folder at the destination is always whole.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from services.config import Settings
from services.episode_store.parquet import EpisodeStore
from services.episodes.model import RawEpisode
from services.features import (
    ACTION,
    CONTROL_SOURCE,
    EPISODE_ID,
    FRAME_INDEX,
    OBSERVATION_STATE,
    TIMESTAMP,
)
from services.store import session_scope
from services.store.models import Episode


@dataclass
class ExportSummary:
    path: str
    episodes: int
    frames: int
    data_files: int


def export_lerobot(
    settings: Settings,
    destination: Path,
    *,
    tasks: list[str] | None = None,
    robots: list[str] | None = None,
    kinds: list[str] | None = None,
) -> ExportSummary:
    """Write the store's ingested episodes (optionally only some tasks, robots or kinds)."""
    destination = Path(destination)
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"{destination} exists and is not empty; export into a new folder")
    with session_scope(settings.db_url) as session:
        query = select(Episode).where(Episode.status == "ok").order_by(Episode.episode_index)
        filters = ((Episode.task, tasks), (Episode.robot_id, robots), (Episode.kind, kinds))
        for column, values in filters:
            if values:
                query = query.where(column.in_(values))
        rows = list(session.scalars(query))
    if not rows:
        raise LookupError("no ingested episodes match; nothing to export")
    source = EpisodeStore(settings.episode_store)
    meta = source.episodes_meta()
    fps = dict(zip(meta[EPISODE_ID].to_pylist(), meta["fps"].to_pylist(), strict=True))
    partial = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    target = EpisodeStore(partial)
    by_file: dict[str, list[Episode]] = {}
    for row in rows:
        by_file.setdefault(row.data_file, []).append(row)
    index = frames_total = 0
    try:
        for data_file, episodes in by_file.items():
            frames = source.read_frames(
                [e.id for e in episodes], data_files={e.id: data_file for e in episodes}
            )
            batch = []
            for episode in episodes:
                raw = _raw(episode, frames[frames[EPISODE_ID] == episode.id], fps[episode.id])
                batch.append((episode.id, index, raw))
                index += 1
                frames_total += raw.steps
            target.write_batch(batch)
        target.write_meta()
        if destination.exists():
            destination.rmdir()  # empty, checked above
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, destination)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return ExportSummary(str(destination), index, frames_total, len(by_file))


def _raw(episode: Episode, frames, fps: float) -> RawEpisode:
    frames = frames.sort_values(FRAME_INDEX)
    sources = frames[CONTROL_SOURCE].tolist()
    return RawEpisode(
        episode_uuid="",
        robot_id=episode.robot_id,
        task=episode.task,
        policy_version=episode.policy_version,
        kind=episode.kind,
        operator_id=None,
        started_at=episode.started_at,
        control_hz=fps,
        states=np.stack(frames[OBSERVATION_STATE].to_numpy()),
        actions=np.stack(frames[ACTION].to_numpy()),
        timestamps=frames[TIMESTAMP].to_numpy(dtype=np.float64),
        control_source=sources,
        reasons=[None] * len(sources),
        outcome=episode.outcome,
    )
