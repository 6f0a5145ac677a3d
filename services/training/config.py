"""Training configuration: frozen, typed, validated."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.config import TrainingSettings

# The fields of a vision run: left out of a state-only run's identity, so that a state
# policy's candidate id is what it was before policies could see.
VISION_FIELDS = ("cameras", "image_px", "augment_shift")


@dataclass(frozen=True)
class TrainConfig:
    # Registered policy name (see `policies/`).
    policy: str = "mlp"
    # Hidden layer widths of the policy.
    hidden: tuple[int, ...] = (256, 256)
    # Adam learning rate.
    lr: float = 1e-3
    # Adam weight decay.
    weight_decay: float = 0.0
    # Steps per minibatch.
    batch_size: int = 256
    # Optimiser steps of the run (fine-tuning or first training alike).
    steps: int = 3000
    # Write a checkpoint (model, optimiser, step, sampler state) every this many steps.
    checkpoint_every: int = 1000
    # Report the loss every this many steps.
    log_every: int = 100
    # Seeds initialisation and minibatch sampling.
    seed: int = 0
    # Continue the interrupted run of this candidate from its last checkpoint.
    resume: bool = False
    # Discard any earlier run and final checkpoint of this candidate and train again.
    overwrite: bool = False
    # Camera names (feature observation.images.<name>) the policy sees; empty: state only.
    cameras: tuple[str, ...] = ()
    # Side of the square input every camera's frames are resized to, in pixels.
    image_px: int = 64
    # Random shift augmentation (DrQ, https://arxiv.org/abs/2004.13649): pad by this many
    # pixels, crop back at random; 0 turns it off. Training only.
    augment_shift: int = 4
    # DataLoader worker processes decoding a vision run's frames (0: in the training process).
    loader_workers: int = 2

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite refuse each other: pick one")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("steps, batch_size, checkpoint_every and log_every must be positive")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if len(set(self.cameras)) != len(self.cameras) or not all(self.cameras):
            raise ValueError(f"cameras must be distinct, non-empty names, got {self.cameras}")
        if self.image_px < 8:
            raise ValueError(f"image_px must be at least 8, got {self.image_px}")
        if not 0 <= self.augment_shift < self.image_px // 2:
            raise ValueError(
                f"augment_shift must be in [0, image_px / 2), got {self.augment_shift} "
                f"for {self.image_px} px"
            )
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be 0 or more, got {self.loader_workers}")

    def identity(self) -> dict:
        """The fields that define what is trained (a candidate's id derives from them):
        resume, overwrite and loader_workers say how to run, not what is trained."""
        how = ("resume", "overwrite", "loader_workers") + (() if self.cameras else VISION_FIELDS)
        return {k: v for k, v in asdict(self).items() if k not in how}

    @classmethod
    def from_settings(
        cls, training: TrainingSettings, *, resume: bool = False, overwrite: bool = False
    ) -> TrainConfig:
        """The nightly run's config: policy, steps and what a vision policy sees, from
        FLYWHEEL_TRAINING's settings; the rest is the defaults above."""
        return cls(
            policy=training.policy,
            steps=training.train_steps,
            resume=resume,
            overwrite=overwrite,
            cameras=training.train_cameras,
            image_px=training.train_image_px,
            augment_shift=training.train_augment_shift,
            loader_workers=training.train_loader_workers,
        )

    @classmethod
    def from_dict(cls, fields: dict) -> TrainConfig:
        """A config from its ``asdict`` (JSON lists back to tuples)."""
        tuples = {k: tuple(fields[k]) for k in ("hidden", "cameras") if k in fields}
        return cls(**{**fields, **tuples})
