"""A task-conditioned MLP: normalised state, one-hot task and (for a vision policy) each
camera's image features in, action in [-1, 1] out."""

from __future__ import annotations

import torch
from torch import nn

from policies.encoders import CameraEncoders
from policies.mlp.config import MLPConfig
from policies.registry import register_policy


@register_policy("mlp", MLPConfig)
class MLPPolicy(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.state_dim + len(config.tasks) + config.image_features * len(config.cameras)
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, config.action_dim))
        self.net = nn.Sequential(*layers)
        # Built after the head, and only for a vision policy: a state policy's parameters and
        # their seeded initial values are what they were before cameras existed.
        if config.cameras:
            self.vision = CameraEncoders(config)

    def forward(
        self,
        state: torch.Tensor,
        task_index: torch.Tensor,
        images: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``state``: (B, state_dim) normalised; ``task_index``: (B,) int64; ``images``: per
        camera (B, 3, H, W), resized and normalised (``LoadedPolicy`` does both). Returns
        (B, A)."""
        task = nn.functional.one_hot(task_index, len(self.config.tasks)).to(state.dtype)
        inputs = [state, task]
        if self.config.cameras:
            inputs += self.vision(images)
        # Meta-World and the toy task take actions in [-1, 1].
        return torch.tanh(self.net(torch.cat(inputs, dim=-1)))
