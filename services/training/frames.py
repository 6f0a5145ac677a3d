"""A vision run's camera frames: decoded in DataLoader workers, prepared in the training loop.

The loop draws each minibatch's rows itself, in the training process, with the run's seeded
sampler (saved in every checkpoint, so that a resumed run draws what the uninterrupted one
would have). The loader draws the same rows ahead of it from a copy of the sampler's state and
hands them to a torch DataLoader, whose workers each hold a ``FrameReader``: a worker decodes
a whole minibatch's frames from the store's videos and resizes them to the policy's input
(``resize_frames``, the one place frames are resized), while the loop trains on the minibatch
before it. In the loop, ``prepare`` shifts them at random (training only) and normalises them
with the run's image statistics.

Decoding happens in processes of their own, so it overlaps training; with ``workers`` 0 the
loader decodes in the training process (no overlap; for tests and debugging).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from policies.images import ImageStats, random_shift, resize_frames
from services.episode_store.frames import FrameReader
from services.features import IMAGE_PREFIX
from services.training.data import RowFrames

# Minibatches each worker decodes ahead of the loop.
PREFETCH = 2


@dataclass
class FrameBatch:
    """One minibatch's frames, as a worker decoded and resized them."""

    # (B,) int64: the rows they are the frames of.
    rows: torch.Tensor
    # Per camera: float32 (B, 3, px, px) on the 0-1 scale.
    images: dict[str, torch.Tensor]
    # Seconds the worker spent decoding and resizing them.
    seconds: float


class _Minibatches(Sampler):
    """The rows of every minibatch from a state of the run's sampler on, as the loop draws them."""

    def __init__(self, state: torch.Tensor, rows: int, batch_size: int, share: slice) -> None:
        self.state, self.rows, self.batch_size, self.share = state, rows, batch_size, share

    def __iter__(self) -> Iterator[torch.Tensor]:
        sampler = torch.Generator()
        sampler.set_state(self.state)
        while True:
            yield torch.randint(0, self.rows, (self.batch_size,), generator=sampler)[self.share]


class _Frames(Dataset):
    """Item ``rows`` (a minibatch's row numbers): their frames of every camera, resized."""

    def __init__(self, frames: RowFrames, image_px: int) -> None:
        self.frames, self.image_px = frames, image_px
        # Picklable: each worker, forked or spawned, opens the video files itself.
        self.reader = FrameReader(frames.root)

    def __getitem__(self, rows: torch.Tensor) -> FrameBatch:
        started = time.perf_counter()
        images = {}
        for camera in self.frames.cameras:
            decoded = self.reader.frames(
                IMAGE_PREFIX + camera, self.frames.requests(camera, rows.numpy())
            )
            images[camera] = resize_frames(decoded, self.image_px, self.image_px)
        return FrameBatch(rows, images, time.perf_counter() - started)

    def __len__(self) -> int:  # pragma: no cover - the sampler is endless; DataLoader asks
        return len(self.frames.episode_index)


class FrameLoader:
    """The frames of the minibatches the run's sampler draws next, decoded by ``workers``."""

    def __init__(
        self,
        frames: RowFrames,
        sampler: torch.Generator,
        *,
        batch_size: int,
        image_px: int,
        workers: int,
        share: slice = slice(None),
    ) -> None:
        """``share``: the part of each minibatch this process trains on (all of it with one
        training worker)."""
        rows = len(frames.episode_index)
        self._loader = DataLoader(
            _Frames(frames, image_px),
            batch_size=None,  # an item is a whole minibatch
            sampler=_Minibatches(sampler.get_state(), rows, batch_size, share),
            num_workers=workers,
            prefetch_factor=PREFETCH if workers else None,
            collate_fn=_as_is,
        )
        self._batches: Iterator[FrameBatch] | None = None

    def next(self, rows: torch.Tensor) -> FrameBatch:
        """The next minibatch's frames: ``rows``, the ones the loop drew, must be its rows.
        The workers start on the first call."""
        if self._batches is None:
            self._batches = iter(self._loader)
        batch = next(self._batches)
        if not torch.equal(batch.rows, rows):
            raise RuntimeError("the frame loader fell out of step with the training sampler")
        return batch

    def close(self) -> None:
        """End the workers now (else they end when the loader is collected)."""
        self._batches = None


def _as_is(batch: FrameBatch) -> FrameBatch:
    return batch


def prepare(
    images: dict[str, torch.Tensor],
    stats: dict[str, ImageStats],
    shift: int,
    generator: torch.Generator | None,
) -> dict[str, torch.Tensor]:
    """The model's image inputs: each camera's resized frames shifted at random by up to
    ``shift`` pixels (0: not at all; DrQ's augmentation) and normalised with its statistics."""
    return {
        camera: stats[camera].normalize(random_shift(x, shift, generator))
        for camera, x in images.items()
    }


def image_stats(frames: RowFrames) -> dict[str, ImageStats]:
    """The run's image normalisation statistics, per camera (kept in its checkpoints)."""
    return {
        camera: ImageStats(mean=np.asarray(frames.mean[camera]), std=np.asarray(frames.std[camera]))
        for camera in frames.cameras
    }
