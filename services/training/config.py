"""Training configuration: frozen, typed, validated."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite refuse each other: pick one")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("steps, batch_size, checkpoint_every and log_every must be positive")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def identity(self) -> dict:
        """The fields that define what is trained (a candidate's id derives from them):
        resume and overwrite say how to run, not what is trained."""
        return {k: v for k, v in asdict(self).items() if k not in ("resume", "overwrite")}
