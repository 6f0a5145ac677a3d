"""The per-worker training loop that Ray Train runs: weighted behaviour cloning.

Checkpoints hold the model, the optimiser, the step and the minibatch sampler's state, so a
run restarted after a worker or driver failure continues exactly where it stopped.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies import make_policy
from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.normalization import NormalizationStats
from policies.registry import config_class
from services.training.config import TrainConfig
from services.training.data import TrainingData


def policy_config(config: TrainConfig, data: TrainingData):
    return config_class(config.policy)(
        state_dim=data.state_dim, action_dim=data.action_dim, tasks=data.tasks, hidden=config.hidden
    )


def train_loop(loop_config: dict[str, Any]) -> None:
    import ray
    import ray.train
    from ray.train import Checkpoint

    config = TrainConfig(**loop_config["train"])
    data: TrainingData = ray.get(loop_config["data"])
    parent: str | None = loop_config["parent_checkpoint"]
    torch.manual_seed(config.seed)

    stats = NormalizationStats.from_arrays(data.states, data.actions)
    cfg = policy_config(config, data)
    model = make_policy(cfg)
    if parent is not None:
        parent_policy = load_checkpoint(Path(parent))
        if parent_policy.config == cfg:  # fine-tune; a changed task set trains afresh
            model.load_state_dict(parent_policy.model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sampler = torch.Generator().manual_seed(config.seed)
    start, losses = 0, []

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "train_state.pt", weights_only=False)
            model.load_state_dict(load_checkpoint(Path(folder)).model.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        sampler.set_state(state["sampler"])
        start, losses = state["step"], state["losses"]

    states = torch.from_numpy(stats.normalize_state(data.states))
    actions = torch.from_numpy(data.actions)
    tasks = torch.from_numpy(data.task_index)
    weights = torch.from_numpy(data.weights)
    model.train()
    window: list[float] = []
    for step in range(start, config.steps):
        idx = torch.randint(0, len(states), (config.batch_size,), generator=sampler)
        error = (model(states[idx], tasks[idx]) - actions[idx]).pow(2).mean(dim=1)
        loss = (error * weights[idx]).sum() / weights[idx].sum().clamp_min(1e-8)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(loss.item())
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            losses.append((done, float(np.mean(window))))
            window = []
        if done % config.checkpoint_every == 0 or done == config.steps:
            with tempfile.TemporaryDirectory() as tmp:
                folder = save_checkpoint(
                    Path(tmp) / "checkpoint",
                    model,
                    cfg,
                    stats,
                    meta={"dataset_id": data.dataset_id, "parent": parent, "step": done},
                    extra={
                        "optimizer": optimizer.state_dict(),
                        "sampler": sampler.get_state(),
                        "step": done,
                        "losses": losses,
                    },
                )
                ray.train.report(
                    {"step": done, "loss": losses[-1][1], "losses": losses},
                    checkpoint=Checkpoint.from_directory(str(folder)),
                )
