"""The fleet's episodes as a reviewer browses them: the index filtered by robot, task,
outcome and status (quarantine reasons included), and one episode with its steps, the
operator's takeovers and its cameras.

Plain read functions, like ``review.py``; the pages turn them into tables, plots and players.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.config import Settings
from services.episode_store.clips import camera_places, clip_path, episode_cameras, write_clip
from services.episode_store.parquet import EpisodeStore
from services.errors import NotFound
from services.features import (
    ACTION,
    CONTROL_OPERATOR,
    CONTROL_SOURCE,
    EPISODE_ID,
    FRAME_INDEX,
    OBSERVATION_STATE,
)
from services.readmodel.evidence import operator_spans
from services.store.models import Episode

# The index columns a reviewer filters the list by.
FILTERS = ("robot_id", "task", "outcome", "status")


def episode_filters(session: Session) -> dict[str, list[str]]:
    """The values each filter can take: those the index holds."""
    return {
        column: [
            v
            for v in session.scalars(
                select(getattr(Episode, column)).distinct().order_by(getattr(Episode, column))
            )
            if v is not None
        ]
        for column in FILTERS
    }


def episode_list(
    session: Session, *, limit: int = 200, **filters: str | None
) -> tuple[list[dict[str, Any]], int]:
    """Episodes matching ``filters`` (robot_id, task, outcome, status; None: any), newest
    first, at most ``limit``; and how many match in all."""
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"no filter {sorted(unknown)[0]!r} (known: {', '.join(FILTERS)})")
    where = [getattr(Episode, k) == v for k, v in filters.items() if v]
    total = session.scalar(select(func.count()).select_from(Episode).where(*where))
    rows = session.scalars(
        select(Episode)
        .where(*where)
        .order_by(Episode.started_at.desc().nulls_last(), Episode.ingested_at.desc(), Episode.id)
        .limit(limit)
    ).all()
    return [_summary(e) for e in rows], total


def episode_detail(settings: Settings, session: Session, episode_id: str) -> dict[str, Any]:
    """One episode: its index row, interventions, and, when its frames are stored, every
    step's state and action, the operator's spans and its cameras."""
    episode = session.get(Episode, episode_id)
    if episode is None:
        raise NotFound(f"no episode {episode_id!r}")
    detail = {
        **_summary(episode),
        "source_uri": episode.source_uri,
        "source_format": episode.source_format,
        "ingested_at": episode.ingested_at,
        "interventions": [
            {
                "start_step": i.start_step,
                "end_step": i.end_step,
                "kind": i.kind,
                "operator_id": i.operator_id,
                "reason": i.reason,
            }
            for i in episode.interventions
        ],
        "states": None,
        "actions": None,
        "operator_spans": [],
        "cameras": [],
    }
    if episode.status != "ok" or not episode.data_file:
        return detail  # quarantined, or a duplicate: nothing of it is in the store
    store = EpisodeStore(settings.episode_store)
    frames = store.read_frames([episode.id], data_files={episode.id: episode.data_file})
    steps = frames[frames[EPISODE_ID] == episode.id].sort_values(FRAME_INDEX)
    detail["states"] = np.stack(steps[OBSERVATION_STATE].to_numpy()).tolist()
    detail["actions"] = np.stack(steps[ACTION].to_numpy()).tolist()
    detail["operator_spans"] = operator_spans(
        (steps[CONTROL_SOURCE] == CONTROL_OPERATOR).to_numpy()
    )
    detail["cameras"] = episode_cameras(store.root, episode.data_file, episode.id, len(steps))
    return detail


def camera_clip(settings: Settings, session: Session, episode_id: str, name: str) -> Path:
    """An MP4 of one episode's camera alone, cut from the store's packed file (no re-encoding)
    once and kept in the store's clip cache, which a later write of that file invalidates."""
    episode = session.get(Episode, episode_id)
    if episode is None or episode.status != "ok" or not episode.data_file:
        raise NotFound(f"no stored episode {episode_id!r}")
    root = settings.episode_store
    place = next(
        (p for p in camera_places(root, episode.data_file, episode.id) if p.name == name), None
    )
    if place is None:
        raise NotFound(f"episode {episode_id} has no camera {name!r}")
    source = root / place.video_file
    if not source.exists():
        raise NotFound(f"the episode store has lost {place.video_file}")
    clip = clip_path(root, episode.id, place)
    if not clip.exists():
        write_clip(source, place.from_timestamp, place.to_timestamp, clip)
    return clip


def _summary(e: Episode) -> dict[str, Any]:
    return {
        "id": e.id,
        "robot_id": e.robot_id,
        "task": e.task,
        "policy_version": e.policy_version,
        "kind": e.kind,
        "started_at": e.started_at,
        "duration_s": e.duration_s,
        "steps": e.steps,
        "outcome": e.outcome,
        "interventions": e.n_interventions,
        "status": e.status,
        "reason": e.reason,
        "duplicate_of": e.duplicate_of,
    }
