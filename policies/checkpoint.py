"""Self-describing checkpoints: weights, config, normalisation stats and where they came from.

A checkpoint is a folder written under a temporary name and renamed into place, so a reader
never sees half of one. Inference normalises with the checkpoint's own statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from policies.episode import ENSEMBLE_M, EpisodeActor
from policies.images import CameraInput, check_frames, resize_frames
from policies.normalization import NormalizationStats
from policies.registry import config_from_dict, config_to_dict, make_policy

WEIGHTS = "model.pt"
CONFIG = "config.json"
STATS = "stats.json"
META = "meta.json"


def save_checkpoint(
    path: Path,
    model: nn.Module,
    config: Any,
    stats: NormalizationStats,
    meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint folder atomically; ``extra`` (optimiser state...) goes beside it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model.state_dict(), tmp / WEIGHTS)
    (tmp / CONFIG).write_text(json.dumps(config_to_dict(config), indent=1))
    (tmp / STATS).write_text(json.dumps(stats.to_dict()))
    (tmp / META).write_text(json.dumps(meta, indent=1, default=str))
    if extra is not None:
        torch.save(extra, tmp / "train_state.pt")
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


@dataclass
class LoadedPolicy:
    model: nn.Module
    config: Any
    stats: NormalizationStats
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        self.model.eval()
        self._task_index = {task: i for i, task in enumerate(self.config.tasks)}
        # Actions predicted per step: ACT's chunk, 1 for a policy that predicts one action.
        self.chunk_size: int = getattr(self.model, "chunk_size", 1)
        for camera in self.cameras:
            if camera.name not in self.stats.images:
                raise ValueError(f"the checkpoint has no image statistics for {camera.describe()}")

    @property
    def cameras(self) -> tuple[CameraInput, ...]:
        """The cameras the policy reads, with their input sizes and training encodings."""
        return self.config.cameras

    def act(
        self, state: np.ndarray, task: str, images: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """One action for one observation: ``state`` and, for a vision policy, one uint8
        (H, W, 3) frame per camera it reads, as the camera gives it (any resolution)."""
        frames = {name: f[None] for name, f in check_frames(self.cameras, images).items()}
        states = np.asarray(state, np.float32)[None]
        with torch.inference_mode():
            return self.model(*self._inputs(states, [self._task(task)], frames)).numpy()[0]

    def act_batch(
        self,
        states: np.ndarray,
        task_index: np.ndarray,
        images: Mapping[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``act`` for a batch: ``images`` per camera uint8 (B, H, W, 3)."""
        states = np.asarray(states, np.float32)
        frames = check_frames(self.cameras, images, batch=len(states))
        with torch.inference_mode():
            return self.model(*self._inputs(states, task_index, frames)).numpy()

    def act_chunk(
        self, state: np.ndarray, task: str, images: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """The actions the policy predicts from now on, (chunk_size, A)."""
        if self.chunk_size == 1:
            return self.act(state, task, images)[None]
        frames = {name: f[None] for name, f in check_frames(self.cameras, images).items()}
        states = np.asarray(state, np.float32)[None]
        with torch.inference_mode():
            inputs = self._inputs(states, [self._task(task)], frames)
            return self.model.forward_chunk(*inputs).numpy()[0]

    def start_episode(self, m: float = ENSEMBLE_M) -> EpisodeActor:
        """A per-episode actor: chunks run with ACT's temporal ensembling (weights
        exp(-m * i)); a policy of one action per step just acts."""
        return EpisodeActor(self.act_chunk, self.chunk_size, m)

    def _task(self, task: str) -> int:
        if task not in self._task_index:
            raise ValueError(f"this policy was not trained on task {task!r} ({self.config.tasks})")
        return self._task_index[task]

    def _inputs(
        self, states: np.ndarray, task_index: Any, frames: dict[str, np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
        """The model's inputs: the state normalised, each frame resized (``resize_frames``)
        and normalised with the checkpoint's statistics."""
        images = {
            c.name: self.stats.images[c.name].normalize(
                resize_frames(frames[c.name], c.height, c.width)
            )
            for c in self.cameras
        }
        return (
            torch.from_numpy(self.stats.normalize_state(states)),
            torch.as_tensor(task_index, dtype=torch.int64),
            images or None,
        )


def load_checkpoint(path: Path) -> LoadedPolicy:
    path = Path(path)
    if not (path / CONFIG).exists():
        raise FileNotFoundError(f"{path} is not a Flywheel checkpoint (no {CONFIG})")
    config = config_from_dict(json.loads((path / CONFIG).read_text()))
    model = make_policy(config)
    model.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
    return LoadedPolicy(
        model=model,
        config=config,
        stats=NormalizationStats.from_dict(json.loads((path / STATS).read_text())),
        meta=json.loads((path / META).read_text()),
    )


@cache
def _checksum(path: str, signature: tuple) -> str:
    digest = hashlib.sha256()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return f"sha256:{digest.hexdigest()}"


def checkpoint_checksum(path: Path) -> str:
    """SHA-256 over a checkpoint folder's files (names and bytes), as a robot verifies it."""
    signature = tuple(
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
    )
    return _checksum(str(path), signature)
