"""A task-conditioned MLP: normalised state and one-hot task in, action in [-1, 1] out."""

from __future__ import annotations

import torch
from torch import nn

from policies.mlp.config import MLPConfig
from policies.registry import register_policy


@register_policy("mlp", MLPConfig)
class MLPPolicy(nn.Module):
    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.state_dim + len(config.tasks)
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, config.action_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, state: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
        """``state``: (B, state_dim) normalised; ``task_index``: (B,) int64. Returns (B, A)."""
        task = nn.functional.one_hot(task_index, len(self.config.tasks)).to(state.dtype)
        # Meta-World and the toy task take actions in [-1, 1].
        return torch.tanh(self.net(torch.cat([state, task], dim=-1)))
