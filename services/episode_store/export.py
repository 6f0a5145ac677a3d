"""Export the episode store, or a slice of it, as a standalone LeRobot v3.0 dataset.

The store already has the LeRobot layout; an export rewrites the chosen episodes through the
same writer (``EpisodeStore.write_batch``), renumbered from 0, so that the dataset is whole on
its own: its own tasks, indices, per-episode stats, info.json and stats.json. Data files are
packed up to LeRobot's file size (info.json's ``data_files_size_in_mb``). Flywheel's extra
columns (``intervention``, ``control_source``, ``policy_version``, ``robot_id``) and per-episode
``kind`` and ``outcome`` go with it, so importing it back restores the same episodes. One
source data file is read at a time. The dataset is written under a temporary name beside the
destination and renamed when complete, so a folder at the destination is always whole.

Cameras, where the store has them (info.json features of dtype ``video``): each episode's
``videos/{camera}/chunk_index``, ``file_index``, ``from_timestamp``, ``to_timestamp`` in
meta/episodes (and its ``stats/{camera}/...`` where the store has them), and the files at
``videos/{camera}/chunk-CCC/file-NNN.mp4``. Each video file holding an exported episode is
renumbered: copied whole where all its episodes are exported, else cut to theirs.

The export's README.md is a dataset card (``card.py``) saying where the data came from.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from sqlalchemy import select

from services.config import Settings
from services.episode_store.card import UNSTATED_LICENSE, dataset_card
from services.episode_store.parquet import (
    CHUNKS_SIZE,
    DATA_FILE_SIZE_MB,
    STATS,
    EpisodeStore,
    chunk_file,
)
from services.episode_store.videos import VIDEO_PATH, Span, cut
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

# Bytes a step takes in a data file besides its state and action floats, over-estimated (the
# indices, the timestamp, Flywheel's columns), so packed files stay under the size limit.
STEP_OVERHEAD_BYTES = 64
VIDEO_PARTS = ("chunk_index", "file_index", "from_timestamp", "to_timestamp")


class MixedRatesError(ValueError):
    """The chosen episodes were recorded at different rates; a LeRobot dataset has one fps."""


@dataclass
class ExportSummary:
    path: str
    episodes: int
    frames: int
    data_files: int
    video_files: int = 0


def export_lerobot(
    settings: Settings,
    destination: Path,
    *,
    tasks: list[str] | None = None,
    robots: list[str] | None = None,
    kinds: list[str] | None = None,
    robot_type: Callable[[str, str], str | None] | None = None,
    code_version: str | None = None,
    license: str = UNSTATED_LICENSE,
    data_file_mb: float = DATA_FILE_SIZE_MB,
) -> ExportSummary:
    """Write the store's ingested episodes (optionally only some tasks, robots or kinds).

    ``robot_type(robot_id, task)`` names an episode's embodiment (None where none is
    declared): info.json's ``robot_type``. ``code_version`` (the commit) goes on the card.
    """
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
    held = source.episodes_meta().to_pylist()
    meta = {row[EPISODE_ID]: row for row in held}
    unstored = [r.id for r in rows if r.id not in meta]
    if unstored:
        raise LookupError(
            f"{len(unstored)} indexed episodes have no row in the episode store's meta/episodes "
            f"(first {unstored[0]}); the store and its index disagree"
        )
    rates = Counter(round(meta[r.id]["fps"]) for r in rows)
    if len(rates) > 1:
        each = ", ".join(f"{hz} Hz: {n} episode{'s' * (n > 1)}" for hz, n in sorted(rates.items()))
        raise MixedRatesError(
            f"the episodes have {len(rates)} rates ({each}); a LeRobot dataset has one fps: "
            "export them apart (--task, --robot, --kind)"
        )
    cameras = {
        key: spec
        for key, spec in source.info().get("features", {}).items()
        if spec.get("dtype") == "video"
    }
    partial = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    target = EpisodeStore(partial)
    try:
        exported = [meta[r.id] for r in rows]
        fps = source.info()["fps"] if cameras else 0
        videos = _copy_videos(source.root, partial, exported, held, cameras, fps)
        packed, frames = _write_data(source, target, rows, meta, videos, data_file_mb)
        types = {robot_type(r.robot_id, r.task) for r in rows} if robot_type else {None}
        target.write_meta(robot_type=", ".join(sorted(t for t in types if t)) or None)
        card = dataset_card(
            target.info(),
            rows,
            code_version=code_version,
            license=license,
            filters={"task": tasks, "robot": robots, "kind": kinds},
        )
        (partial / "README.md").write_text(card)
        if destination.exists():
            destination.rmdir()  # empty, checked above
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, destination)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return ExportSummary(
        str(destination), len(rows), frames, packed, len({file for file, _, _ in videos.values()})
    )


def _write_data(source, target, rows, meta, videos, data_file_mb: float) -> tuple[int, int]:
    """Write the episodes renumbered from 0, packed into data files of at most
    ``data_file_mb`` (an episode larger than that alone in its file); returns the number of
    files and of frames written."""
    by_file: dict[str, list[Episode]] = {}
    for row in rows:
        by_file.setdefault(row.data_file, []).append(row)
    limit = data_file_mb * 2**20
    pending: list[tuple[str, int, RawEpisode]] = []
    pending_bytes = index = files = frames_total = 0
    for data_file, episodes in by_file.items():
        frames = source.read_frames(
            [e.id for e in episodes], data_files={e.id: data_file for e in episodes}
        )
        for episode in episodes:
            row = meta[episode.id]
            raw = _raw(episode, frames[frames[EPISODE_ID] == episode.id], row)
            size = raw.steps * (4 * (raw.state_dim + raw.action_dim) + STEP_OVERHEAD_BYTES)
            if pending and pending_bytes + size > limit:
                target.write_batch(pending, episode_columns=_camera_columns(pending, meta, videos))
                files += 1
                pending, pending_bytes = [], 0
            pending.append((episode.id, index, raw))
            pending_bytes += size
            index += 1
            frames_total += raw.steps
    target.write_batch(pending, episode_columns=_camera_columns(pending, meta, videos))
    return files + 1, frames_total


def _copy_videos(
    store: Path, target: Path, episodes: list[dict], held: list[dict], cameras, fps: float
) -> dict[tuple[str, str], tuple[str, float, float]]:
    """Copy the video files holding exported ``episodes`` (of the store's rows ``held``),
    numbered from 0 per camera; returns (camera, episode id) -> (exported file, from, to).

    A file whose episodes are all exported is copied whole; one holding others too is cut to
    the exported episodes' frames (``videos.cut``, as deletion cuts them: remuxed, not encoded
    again), so that an export of some episodes carries no frame of the rest.
    """
    placed: dict[tuple[str, str], tuple[str, float, float]] = {}
    for camera in cameras:
        by_file: dict[str, list[dict]] = {}
        for row in episodes:
            by_file.setdefault(_video_file(row, camera), []).append(row)
        for number, (old, rows) in enumerate(by_file.items()):
            if not (store / old).is_file():
                raise LookupError(
                    f"episode {rows[0][EPISODE_ID]}'s {camera} video {old} is missing from the "
                    "episode store"
                )
            chunk, file = divmod(number, CHUNKS_SIZE)
            new = VIDEO_PATH.format(video_key=camera, chunk_index=chunk, file_index=file)
            (target / new).parent.mkdir(parents=True, exist_ok=True)
            spans = [
                Span(
                    row[f"videos/{camera}/from_timestamp"],
                    row[f"videos/{camera}/to_timestamp"],
                    row["length"],
                )
                for row in rows
            ]
            others = {
                row[EPISODE_ID]
                for row in held
                if row.get(f"videos/{camera}/chunk_index") is not None
                and _video_file(row, camera) == old
            } - {row[EPISODE_ID] for row in rows}
            if others:  # the store's own cut: packets remuxed, each episode from a keyframe
                rate = Fraction(fps).limit_denominator(1001)
                spans = cut(store / old, spans, rate, target / new)
            else:
                shutil.copyfile(store / old, target / new)
            for row, span in zip(rows, spans, strict=True):
                placed[(camera, row[EPISODE_ID])] = (new, span.from_timestamp, span.to_timestamp)
    return placed


def _video_file(row: dict, camera: str) -> str:
    chunk, file = (row.get(f"videos/{camera}/{part}") for part in VIDEO_PARTS[:2])
    if chunk is None or file is None:
        raise LookupError(f"episode {row[EPISODE_ID]} has no {camera} video in the episode store")
    return VIDEO_PATH.format(video_key=camera, chunk_index=chunk, file_index=file)


def _camera_columns(batch, meta, placed) -> dict[str, list]:
    """meta/episodes' camera columns for a batch: the exported video file, the episode's
    place in it, and its per-episode stats where the store has them."""
    columns: dict[str, list] = {}
    for camera in sorted({camera for camera, _ in placed}):
        where = [placed[(camera, episode_id)] for episode_id, _, _ in batch]
        numbers = [chunk_file(file) for file, _, _ in where]
        columns[f"videos/{camera}/chunk_index"] = [c for c, _ in numbers]
        columns[f"videos/{camera}/file_index"] = [f for _, f in numbers]
        columns[f"videos/{camera}/from_timestamp"] = [start for _, start, _ in where]
        columns[f"videos/{camera}/to_timestamp"] = [end for _, _, end in where]
        rows = [meta[episode_id] for episode_id, _, _ in batch]
        stats = [f"stats/{camera}/{s}" for s in STATS]
        if all(row.get(column) is not None for row in rows for column in stats):
            columns.update({column: [row[column] for row in rows] for column in stats})
    return columns


def _raw(episode: Episode, frames, row: dict) -> RawEpisode:
    frames = frames.sort_values(FRAME_INDEX)
    sources = frames[CONTROL_SOURCE].tolist()
    names = {k: tuple(row[k]) if row.get(k) else None for k in ("state_names", "action_names")}
    return RawEpisode(
        episode_uuid="",
        robot_id=episode.robot_id,
        task=episode.task,
        policy_version=episode.policy_version,
        kind=episode.kind,
        operator_id=None,
        started_at=episode.started_at,
        control_hz=row["fps"],
        states=np.stack(frames[OBSERVATION_STATE].to_numpy()),
        actions=np.stack(frames[ACTION].to_numpy()),
        timestamps=frames[TIMESTAMP].to_numpy(dtype=np.float64),
        control_source=sources,
        reasons=[None] * len(sources),
        outcome=episode.outcome,
        **names,
    )
