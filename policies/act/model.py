"""An action-chunking transformer on robot state (after ACT, Zhao et al. 2023, without the
images and the CVAE): the state and the task are encoded as tokens, and ``chunk_size``
learned queries decode the next actions in one pass. Training fits the whole chunk; the
robot runs the first action of the chunk predicted at every step."""

from __future__ import annotations

import torch
from torch import nn

from policies.act.config import ACTConfig
from policies.registry import register_policy


@register_policy("act", ACTConfig)
class ACTPolicy(nn.Module):
    def __init__(self, config: ACTConfig) -> None:
        super().__init__()
        self.config = config
        self.chunk_size = config.chunk_size
        d = config.d_model
        self.state_proj = nn.Linear(config.state_dim, d)
        self.task_embed = nn.Embedding(len(config.tasks), d)
        self.token_type = nn.Parameter(torch.zeros(2, d))
        self.queries = nn.Parameter(torch.randn(config.chunk_size, d) * 0.02)
        self.transformer = nn.Transformer(
            d_model=d,
            nhead=config.heads,
            num_encoder_layers=config.layers,
            num_decoder_layers=config.layers,
            dim_feedforward=config.hidden[0],
            dropout=0.0,
            batch_first=True,
        )
        self.head = nn.Linear(d, config.action_dim)

    def forward_chunk(self, state: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
        """``state``: (B, state_dim) normalised; ``task_index``: (B,). Returns (B, chunk, A)."""
        memory = torch.stack([self.state_proj(state), self.task_embed(task_index)], dim=1)
        memory = memory + self.token_type
        queries = self.queries.expand(len(state), -1, -1)
        return torch.tanh(self.head(self.transformer(memory, queries)))

    def forward(self, state: torch.Tensor, task_index: torch.Tensor) -> torch.Tensor:
        """The action to run now: the first of the chunk. Returns (B, A)."""
        return self.forward_chunk(state, task_index)[:, 0]
