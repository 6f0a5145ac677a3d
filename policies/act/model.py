"""An action-chunking transformer (after ACT, Zhao et al. 2023, without the CVAE): the state,
the task and each camera's image features are encoded as tokens, and ``chunk_size`` learned
queries decode the next actions in one pass. Training fits the whole chunk; on the robot,
``LoadedPolicy.start_episode`` predicts a chunk every step and runs the temporal ensemble of
every chunk's prediction for the current step (``policies/episode.py``)."""

from __future__ import annotations

import torch
from torch import nn

from policies.act.config import ACTConfig
from policies.encoders import CameraEncoders
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
        # One learned type per memory token: state, task, then each camera.
        self.token_type = nn.Parameter(torch.zeros(2 + len(config.cameras), d))
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
        # Built last, and only for a vision policy: a state policy's parameters and their
        # seeded initial values are what they were before cameras existed.
        if config.cameras:
            self.vision = CameraEncoders(config)
            self.camera_proj = nn.Linear(config.image_features, d)

    def forward_chunk(
        self,
        state: torch.Tensor,
        task_index: torch.Tensor,
        images: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``state``: (B, state_dim) normalised; ``task_index``: (B,); ``images``: per camera
        (B, 3, H, W), resized and normalised. Returns (B, chunk, A)."""
        tokens = [self.state_proj(state), self.task_embed(task_index)]
        if self.config.cameras:
            tokens += [self.camera_proj(f) for f in self.vision(images)]
        memory = torch.stack(tokens, dim=1) + self.token_type
        queries = self.queries.expand(len(state), -1, -1)
        return torch.tanh(self.head(self.transformer(memory, queries)))

    def forward(
        self,
        state: torch.Tensor,
        task_index: torch.Tensor,
        images: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The first action of the chunk. Returns (B, A)."""
        return self.forward_chunk(state, task_index, images)[:, 0]
