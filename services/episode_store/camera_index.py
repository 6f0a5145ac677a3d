"""Where given steps' camera frames are, for the readers that decode them by step.

Training (services/training/data.py) and offline evaluation (services/evaluation/offline.py)
both hold steps as (episode id, episode_index, frame_index) and need, per camera, each step's
video file and time (``frames.locate``), the camera's rate, and its image statistics over
those episodes. ``CameraIndex`` reads meta/episodes once for a set of episodes and answers
for each camera; an episode without the camera is refused by name, before any decoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.episode_store.frames import VideoFile, locate
from services.episode_store.parquet import EpisodeStore, merge_stats
from services.features import EPISODE_ID, IMAGE_PREFIX


class MissingCamera(ValueError):
    """Steps were asked for a camera that some of their episodes do not have."""


class CameraIndex:
    """meta/episodes of some episodes of a store, to locate their steps' frames per camera."""

    def __init__(self, store: EpisodeStore, episode_ids: Sequence[str], what: str) -> None:
        self.store = store
        # Names the steps' owner in errors ("dataset 3f2a...", "held-out episodes").
        self.what = what
        self.episode_ids = sorted(set(episode_ids))
        meta = store.episodes_meta()
        if meta.num_rows:
            meta = meta.filter(pc.is_in(meta[EPISODE_ID], pa.array(self.episode_ids)))
        self.meta = meta
        self.features = store.info().get("features", {})

    def check(self, camera: str) -> str:
        """The camera's feature key; refuses a camera some of the episodes lack, naming them."""
        key = IMAGE_PREFIX + camera
        column = f"videos/{key}/chunk_index"
        placed = (
            set(self.meta[EPISODE_ID].filter(pc.is_valid(self.meta[column])).to_pylist())
            if column in self.meta.column_names
            else set()
        )
        lacking = [e for e in self.episode_ids if e not in placed]
        if lacking or key not in self.features:
            lacking = lacking or self.episode_ids
            have = sorted(k.removeprefix(IMAGE_PREFIX) for k in self.store.cameras() or {})
            raise MissingCamera(
                f"{self.what}: {len(lacking)} of {len(self.episode_ids)} episodes have no camera "
                f"{camera!r} ({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}); "
                f"the episode store's cameras: {', '.join(have) or 'none'}"
            )
        return key

    def fps(self, camera: str) -> float:
        """The camera's frames per second (info.json ``video.fps``)."""
        return float(self.features[self.check(camera)]["info"]["video.fps"])

    def locate(
        self, camera: str, episode_index: np.ndarray, frame_index: np.ndarray
    ) -> list[tuple[VideoFile, float]]:
        """(video file, time in it) of each step, for ``FrameReader.frames``."""
        return locate(self.meta, self.check(camera), episode_index, frame_index, self.fps(camera))

    def stats(self, camera: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The camera's per-channel (3,) mean and std on the 0-1 scale over the episodes,
        pooled from the store's per-episode statistics; None where some episode has none."""
        key = self.check(camera)
        columns = [f"stats/{key}/{s}" for s in ("mean", "std", "min", "max", "count")]
        if not all(c in self.meta.column_names and not self.meta[c].null_count for c in columns):
            return None
        pooled = merge_stats(self.meta, key)
        return (
            np.asarray(pooled["mean"], np.float32).reshape(3),
            np.asarray(pooled["std"], np.float32).reshape(3),
        )
