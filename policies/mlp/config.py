"""Configuration of the MLP policy."""

from __future__ import annotations

from dataclasses import dataclass

from policies.encoders import check_vision_fields
from policies.images import CameraInput
from policies.registry import check_common_fields


@dataclass(frozen=True)
class MLPConfig:
    # Size of `observation.state`.
    state_dim: int
    # Size of `action`.
    action_dim: int
    # Task names in index order: the policy is conditioned on a one-hot task, so one policy
    # serves every task of the fleet.
    tasks: tuple[str, ...]
    # Widths of the hidden layers.
    hidden: tuple[int, ...] = (256, 256)
    # Dropout after each hidden layer (0 disables it).
    dropout: float = 0.0
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
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
