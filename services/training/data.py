"""What a training run consumes: arrays materialised from one dataset manifest."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from services.config import Settings
from services.curation.manifest import WEIGHT, read_manifest
from services.episode_store.parquet import EpisodeStore
from services.features import ACTION, EPISODE_ID, FRAME_INDEX, OBSERVATION_STATE

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


def load_training_data(settings: Settings, dataset_id: str) -> TrainingData:
    """The arrays a training run needs: the manifest's weighted steps, joined to their frames."""
    header, table = read_manifest(settings, dataset_id)
    steps = table.to_pandas()
    steps = steps[steps[WEIGHT] > 0]
    data_files = {e["id"]: e["data_file"] for e in header["episodes"]}
    frames = EpisodeStore(settings.episode_store).read_frames(
        sorted(set(steps[EPISODE_ID])), data_files=data_files
    )
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
    )
