"""The per-worker training loop that Ray Train runs: weighted behaviour cloning.

Checkpoints hold the model, the optimiser, the step and the minibatch sampler's state, so a
run restarted after a worker or driver failure continues exactly where it stopped.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies import make_policy
from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.images import CameraInput
from policies.normalization import NormalizationStats
from policies.registry import config_class
from services.training.config import TrainConfig
from services.training.data import TrainingData
from services.training.frames import FrameLoader, image_stats, prepare


def policy_config(config: TrainConfig, data: TrainingData):
    # Frames come decoded from the store's H.264 videos, resized to image_px square.
    px = config.image_px
    cameras = tuple(CameraInput(name, px, px, "h264") for name in config.cameras)
    return config_class(config.policy)(
        state_dim=data.state_dim,
        action_dim=data.action_dim,
        tasks=data.tasks,
        hidden=config.hidden,
        **({"cameras": cameras} if cameras else {}),  # a state policy's config as before
    )


@dataclass
class Run:
    """Everything one training run mutates; saved whole in every checkpoint."""

    config: TrainConfig
    data: TrainingData
    parent: str | None
    policy_config: Any
    stats: NormalizationStats
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: torch.Generator
    step: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)

    @classmethod
    def start(cls, config: TrainConfig, data: TrainingData, parent: str | None) -> Run:
        torch.manual_seed(config.seed)
        parent_policy = load_checkpoint(Path(parent)) if parent is not None else None
        if parent_policy is not None and set(data.tasks) <= set(parent_policy.config.tasks):
            # tonight's data may cover fewer tasks (the fleet's task mix shifted): the
            # candidate keeps the parent's tasks, so it still serves the others
            data = data.in_vocabulary(tuple(parent_policy.config.tasks))
        have = data.frames.cameras if data.frames is not None and config.cameras else ()
        if have != config.cameras:
            raise ValueError(f"the run trains on cameras {config.cameras}; the data has {have}")
        images = image_stats(data.frames) if config.cameras else None
        stats = NormalizationStats.from_arrays(data.states, data.actions, images=images)
        cfg = policy_config(config, data)
        model = make_policy(cfg)
        if parent_policy is not None and parent_policy.config == cfg:
            model.load_state_dict(parent_policy.model.state_dict())  # fine-tune; else afresh
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        sampler = torch.Generator().manual_seed(config.seed)
        return cls(config, data, parent, cfg, stats, model, optimizer, sampler)

    def restore(self, folder: Path) -> None:
        state = torch.load(folder / "train_state.pt", weights_only=False)
        self.model.load_state_dict(load_checkpoint(folder).model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.set_state(state["sampler"])
        self.step, self.losses = state["step"], state["losses"]

    def save(self, folder: Path) -> Path:
        return save_checkpoint(
            folder,
            self.model,
            self.policy_config,
            self.stats,
            meta={"dataset_id": self.data.dataset_id, "parent": self.parent, "step": self.step},
            extra={
                "optimizer": self.optimizer.state_dict(),
                "sampler": self.sampler.get_state(),
                "step": self.step,
                "losses": self.losses,
            },
        )

    def fit(
        self,
        on_checkpoint: Callable[[Run], None],
        on_step: Callable[[Run], None] | None = None,
    ) -> None:
        """Weighted behaviour cloning from the current step to the last; ``on_checkpoint``
        runs every ``checkpoint_every`` steps and at the end, ``on_step`` after every step."""
        config, data = self.config, self.data
        states = torch.from_numpy(self.stats.normalize_state(data.states))
        actions = torch.from_numpy(data.actions)
        tasks = torch.from_numpy(data.task_index)
        weights = torch.from_numpy(data.weights)
        # An action-chunking policy fits the next `chunk` actions of every step at once.
        chunk = getattr(self.model, "chunk_size", 1)
        if chunk > 1:
            targets, mask = (torch.from_numpy(a) for a in data.chunks(chunk))
            mask = mask.float()
        loader = self._frame_loader()
        self.model.train()
        window: list[float] = []
        while self.step < config.steps:
            idx = torch.randint(0, len(states), (config.batch_size,), generator=self.sampler)
            inputs = (states[idx], tasks[idx], *self._images(loader, idx))
            if chunk > 1:
                predicted = self.model.forward_chunk(*inputs)
                per_step = (predicted - targets[idx]).pow(2).mean(dim=2)
                error = (per_step * mask[idx]).sum(dim=1) / mask[idx].sum(dim=1)
            else:
                error = (self.model(*inputs) - actions[idx]).pow(2).mean(dim=1)
            loss = (error * weights[idx]).sum() / weights[idx].sum().clamp_min(1e-8)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            window.append(loss.item())
            self.step += 1
            if self.step % config.log_every == 0 or self.step == config.steps:
                self.losses.append((self.step, float(np.mean(window))))
                window = []
            if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                on_checkpoint(self)
            if on_step is not None:
                on_step(self)
        if loader is not None:
            loader.close()

    def _frame_loader(self) -> FrameLoader | None:
        """A vision run's frames of the minibatches to come, from this step on."""
        if self.data.frames is None or not self.config.cameras:
            return None
        return FrameLoader(
            self.data.frames,
            self.sampler,
            batch_size=self.config.batch_size,
            image_px=self.config.image_px,
            workers=self.config.loader_workers,
        )

    def _images(self, loader: FrameLoader | None, idx: torch.Tensor) -> tuple:
        """The model's images argument for the minibatch ``idx``: none for a state policy."""
        if loader is None:
            return ()
        # Shifts seeded by the step: a resumed run augments exactly as the uninterrupted one.
        shifts = torch.Generator().manual_seed(self.config.seed * 2**32 + self.step)
        frames = loader.next(idx).images
        return (prepare(frames, self.stats.images, self.config.augment_shift, shifts),)


@dataclass(frozen=True)
class WorkerFault:
    """A drill: the training worker kills itself (SIGKILL) once, at this step.

    The marker file records that the fault fired, so the worker Ray restarts goes on.
    """

    at_step: int
    marker: str

    def __call__(self, run: Run) -> None:
        if run.step == self.at_step and not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)


def train_loop(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: resume from Ray's last checkpoint, report every one."""
    import ray
    import ray.train
    from ray.train import Checkpoint

    config = TrainConfig(**loop_config["train"])
    run = Run.start(config, ray.get(loop_config["data"]), loop_config["parent_checkpoint"])
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            run.restore(Path(folder))

    def report(run: Run) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = run.save(Path(tmp) / "checkpoint")
            ray.train.report(
                {"step": run.step, "loss": run.losses[-1][1], "losses": run.losses},
                checkpoint=Checkpoint.from_directory(str(folder)),
            )

    run.fit(report, on_step=loop_config.get("fault"))
