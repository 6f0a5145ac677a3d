"""What a training run consumes: arrays materialised from one dataset manifest.

A vision run's rows also carry where their camera frames are (``RowFrames``): each row's
video file and time per camera, from meta/episodes, and per-camera image statistics. The
frames themselves are decoded while training (services/training/frames.py), never held.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from services.config import Settings
from services.curation.manifest import WEIGHT, read_manifest
from services.episode_store.camera_index import CameraIndex
from services.episode_store.frames import FrameReader
from services.episode_store.parquet import EpisodeStore
from services.features import (
    ACTION,
    EPISODE_ID,
    EPISODE_INDEX,
    FRAME_INDEX,
    IMAGE_PREFIX,
    OBSERVATION_STATE,
)

# Steps ahead kept for action-chunking policies (their chunk may be at most this long).
HORIZON = 16


def actions_ahead(
    actions: np.ndarray, episode_ids: np.ndarray, horizon: int = HORIZON
) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by episode then frame: each row's action and the ``horizon - 1``
    after it within its episode, padded with the episode's last action, and the mask."""
    n = len(actions)
    starts = np.flatnonzero(np.r_[True, episode_ids[1:] != episode_ids[:-1]])
    ends = np.r_[starts[1:], n]
    end_of_row = np.repeat(ends, ends - starts)
    ahead = np.empty((n, horizon, actions.shape[1]), np.float32)
    mask = np.empty((n, horizon), bool)
    rows = np.arange(n)
    for h in range(horizon):
        idx = rows + h
        mask[:, h] = idx < end_of_row
        ahead[:, h] = actions[np.minimum(idx, end_of_row - 1)]
    return ahead, mask


# Frames decoded for a camera's image statistics where the store holds none of its own.
STATS_SAMPLE = 64


@dataclass(frozen=True)
class RowFrames:
    """Where the camera frames of each training row are in the episode store's videos."""

    # The episode store's root folder: video paths are relative to it.
    root: str
    # Camera names (feature observation.images.<name>), in the order the policy takes them.
    cameras: tuple[str, ...]
    # (N,) int64: each row's episode_index (meta/episodes) and frame_index in it.
    episode_index: np.ndarray
    frame_index: np.ndarray
    # Per camera: (N, 2) int64 (chunk_index, file_index) of the video file holding the row's
    # frame, and (N,) float64 the frame's time in that file, seconds (``frames.locate``).
    files: dict[str, np.ndarray]
    times: dict[str, np.ndarray]
    # Per camera: frames per second (info.json ``video.fps``).
    fps: dict[str, float]
    # Per camera: per-channel (3,) mean and std of its pixels on the 0-1 scale, over the
    # rows' episodes (pooled from the store's per-episode stats, or from sampled frames).
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.episode_index)
        per_camera = (self.files, self.times, self.fps, self.mean, self.std)
        if any(set(d) != set(self.cameras) for d in per_camera):
            raise ValueError(f"every per-camera field must name the cameras {self.cameras}")
        if len(self.frame_index) != n or any(len(self.times[c]) != n for c in self.cameras):
            raise ValueError("every row needs its episode, frame and per-camera time")

    def requests(self, camera: str, rows: np.ndarray) -> list[tuple[tuple[int, int], float]]:
        """``FrameReader.frames``' requests for ``rows`` of ``camera``."""
        files, times = self.files[camera][rows], self.times[camera][rows]
        return [((int(c), int(f)), float(t)) for (c, f), t in zip(files, times, strict=True)]


@dataclass(frozen=True)
class TrainingData:
    # (N, state_dim) float32: raw, unnormalised `observation.state` of every step in the manifest.
    states: np.ndarray
    # (N, action_dim) float32: the action taken at that step (by the policy or the operator).
    actions: np.ndarray
    # (N,) int64: index into `tasks` of the step's task.
    task_index: np.ndarray
    # (N,) float32: per-step loss weight from the manifest's weighting scheme (mean about 1).
    weights: np.ndarray
    # Task names, in index order; the policy's task vocabulary.
    tasks: tuple[str, ...]
    # Content hash of the manifest these arrays came from.
    dataset_id: str
    # (N, H, action_dim) float32: the actions of the step and the H - 1 after it in the same
    # episode (the targets of action-chunking policies), padded with the episode's last
    # action; ``ahead_mask`` (N, H) bool says which are real. None: single-step data only.
    actions_ahead: np.ndarray | None = None
    ahead_mask: np.ndarray | None = None
    # Where each row's camera frames are; None: a state-only run.
    frames: RowFrames | None = None

    def __post_init__(self) -> None:
        n = len(self.states)
        if not (len(self.actions) == len(self.task_index) == len(self.weights) == n):
            raise ValueError("states, actions, task_index and weights must have the same length")
        if n == 0:
            raise ValueError(f"dataset {self.dataset_id} has no steps to train on")
        if (self.actions_ahead is None) != (self.ahead_mask is None):
            raise ValueError("actions_ahead and ahead_mask go together")
        if self.actions_ahead is not None and (
            self.actions_ahead.shape[:1] + self.actions_ahead.shape[2:] != self.actions.shape
            or self.ahead_mask.shape != self.actions_ahead.shape[:2]
        ):
            raise ValueError("actions_ahead must be (N, H, action_dim) with an (N, H) mask")
        if self.frames is not None and len(self.frames.episode_index) != n:
            raise ValueError("frames must locate every row's camera frames")

    def chunks(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Targets and mask of ``size``-step action chunks: (N, size, A) and (N, size)."""
        if self.actions_ahead is None or self.actions_ahead.shape[1] < size:
            have = 1 if self.actions_ahead is None else self.actions_ahead.shape[1]
            raise ValueError(f"a chunk of {size} actions needs {size} steps ahead; data has {have}")
        return self.actions_ahead[:, :size], self.ahead_mask[:, :size]

    def in_vocabulary(self, tasks: tuple[str, ...]) -> TrainingData:
        """The same steps with task indices into ``tasks``, a superset of this data's tasks:
        a fine-tuned policy keeps serving every task its parent served, including those
        tonight's dataset has no steps of."""
        missing = sorted(set(self.tasks) - set(tasks))
        if missing:
            raise ValueError(f"tasks {missing} are not in the vocabulary {tasks}")
        remap = np.array([tasks.index(t) for t in self.tasks], dtype=np.int64)
        return replace(self, task_index=remap[self.task_index], tasks=tuple(tasks))

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def __len__(self) -> int:
        return len(self.states)


def load_training_data(
    settings: Settings, dataset_id: str, cameras: tuple[str, ...] = ()
) -> TrainingData:
    """The arrays a training run needs: the manifest's weighted steps, joined to their frames,
    and for each of ``cameras`` where every step's picture is."""
    header, table = read_manifest(settings, dataset_id)
    steps = table.to_pandas()
    steps = steps[steps[WEIGHT] > 0]
    data_files = {e["id"]: e["data_file"] for e in header["episodes"]}
    store = EpisodeStore(settings.episode_store)
    frames = store.read_frames(sorted(set(steps[EPISODE_ID])), data_files=data_files)
    # Actions ahead come from every frame of the episode, weighted or not.
    frames = frames.sort_values([EPISODE_ID, FRAME_INDEX], kind="stable").reset_index(drop=True)
    ahead, ahead_mask = actions_ahead(
        np.stack(frames[ACTION].to_numpy()).astype(np.float32), frames[EPISODE_ID].to_numpy()
    )
    frames["_row"] = np.arange(len(frames))
    joined = steps.merge(frames, on=[EPISODE_ID, FRAME_INDEX], how="inner", validate="one_to_one")
    if len(joined) != len(steps):
        raise RuntimeError(
            f"dataset {dataset_id}: {len(steps) - len(joined)} manifest steps are missing "
            "from the episode store"
        )
    tasks = tuple(header["tasks"])
    task_of = {task: i for i, task in enumerate(tasks)}
    return TrainingData(
        states=np.stack(joined[OBSERVATION_STATE].to_numpy()).astype(np.float32),
        actions=np.stack(joined[ACTION].to_numpy()).astype(np.float32),
        task_index=joined["task"].map(task_of).to_numpy(dtype=np.int64),
        weights=joined[WEIGHT].to_numpy(dtype=np.float32),
        tasks=tasks,
        dataset_id=dataset_id,
        actions_ahead=ahead[joined["_row"].to_numpy()],
        ahead_mask=ahead_mask[joined["_row"].to_numpy()],
        frames=row_frames(store, joined, cameras, dataset_id) if cameras else None,
    )


def row_frames(
    store: EpisodeStore, rows: pd.DataFrame, cameras: tuple[str, ...], dataset_id: str
) -> RowFrames:
    """Where ``rows``' frames (columns episode_id, episode_index, frame_index) of each camera
    are; refuses a camera that some of the rows' episodes lack, naming them."""
    index = CameraIndex(store, rows[EPISODE_ID].unique().tolist(), f"dataset {dataset_id}")
    episode_index = rows[EPISODE_INDEX].to_numpy(dtype=np.int64)
    frame_index = rows[FRAME_INDEX].to_numpy(dtype=np.int64)
    for camera in cameras:
        index.check(camera)  # every camera is checked before any is located
    files, times, mean, std = {}, {}, {}, {}
    for camera in cameras:
        located = index.locate(camera, episode_index, frame_index)
        files[camera] = np.array([file for file, _ in located], dtype=np.int64).reshape(-1, 2)
        times[camera] = np.array([t for _, t in located], dtype=np.float64)
        spread = np.unique(np.linspace(0, len(rows) - 1, STATS_SAMPLE).astype(int))
        mean[camera], std[camera] = index.stats(camera) or _sampled_stats(
            store.root, IMAGE_PREFIX + camera, [located[i] for i in spread]
        )
    fps = {camera: index.fps(camera) for camera in cameras}
    return RowFrames(
        str(store.root), cameras, episode_index, frame_index, files, times, fps, mean, std
    )


def _sampled_stats(root: Path, key: str, requests: list) -> tuple[np.ndarray, np.ndarray]:
    """A camera's per-channel mean and std from the frames of ``requests`` (a sample)."""
    with FrameReader(root) as reader:
        pixels = reader.frames(key, requests) / 255.0
    return pixels.mean((0, 1, 2)).astype(np.float32), pixels.std((0, 1, 2)).astype(np.float32)
