"""Configuration of the action-chunking transformer policy (state-based, ACT-like)."""

from __future__ import annotations

from dataclasses import dataclass

from policies.encoders import check_vision_fields
from policies.images import CameraInput
from policies.registry import check_common_fields


@dataclass(frozen=True)
class ACTConfig:
    # Size of `observation.state`.
    state_dim: int
    # Size of `action`.
    action_dim: int
    # Task names in index order: a learned task token conditions the policy, so one policy
    # serves every task of the fleet.
    tasks: tuple[str, ...]
    # Feed-forward widths of the transformer layers (the first is used); named like the
    # MLP's so the training configuration builds either.
    hidden: tuple[int, ...] = (256,)
    # Width of the tokens.
    d_model: int = 64
    # Attention heads per layer.
    heads: int = 4
    # Encoder and decoder layers.
    layers: int = 2
    # Actions predicted per step (the chunk); the robot executes the first of each chunk.
    chunk_size: int = 8
    # Cameras the policy reads besides the state, each with its input size and the encoding
    # of its training frames; empty = a state-only policy.
    cameras: tuple[CameraInput, ...] = ()
    # Widths of the image encoder's stages (one encoder per camera): the first quarters the
    # frame's side (a stride-2 stem and a max-pool), each further one halves it.
    image_channels: tuple[int, ...] = (16, 32, 64)
    # Spatial-softmax keypoints per camera (robomimic's default, 32).
    image_keypoints: int = 32
    # Features per camera out of the image encoder.
    image_features: int = 64

    def __post_init__(self) -> None:
        check_common_fields(self)
        check_vision_fields(self)
        if self.d_model < 1 or self.heads < 1 or self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        if self.layers < 1 or self.chunk_size < 1:
            raise ValueError("layers and chunk_size must be at least 1")
