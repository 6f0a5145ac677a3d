"""The per-worker training loop that Ray Train runs: weighted behaviour cloning.

Checkpoints hold the model, the optimiser, the step and the minibatch sampler's state, so a
run restarted after a worker or driver failure continues exactly where it stopped.

On several workers (data parallelism, FLYWHEEL_TRAINING_WORKERS) every worker draws the
same minibatch from the same seeded sampler and trains on its own share of it; DDP averages
the gradients, so the run takes the steps one worker would take on the whole minibatch, and
the one sampler state in rank 0's checkpoint resumes every worker exactly.
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


@dataclass(frozen=True)
class Worker:
    """This process's place among a run's data-parallel workers (Ray Train's ranks)."""

    # Rank of this worker, 0 to world - 1; rank 0 writes the checkpoints.
    rank: int = 0
    # Workers training together.
    world: int = 1
    # Where this worker's model and minibatches live (a GPU of its own with use_gpu).
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} is not among {self.world} workers")

    @classmethod
    def of_ray_train(cls) -> Worker:
        """This Ray Train worker; its device is Ray's choice (cuda:N with use_gpu, else CPU).
        No GPU was available where this was written: only the CPU (gloo) path is tested."""
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        return cls(context.get_world_rank(), context.get_world_size(), ray.train.torch.get_device())

    def share(self, idx: torch.Tensor) -> torch.Tensor:
        """This worker's part of a minibatch that every worker drew alike: one of ``world``
        contiguous parts, sizes differing by at most one."""
        return idx[self.part(len(idx))]

    def part(self, batch_size: int) -> slice:
        """Where this worker's share lies in a minibatch of ``batch_size`` (as tensor_split
        parts it: the first ``batch_size % world`` parts one longer)."""
        size, longer = divmod(batch_size, self.world)
        start = self.rank * size + min(self.rank, longer)
        return slice(start, start + size + (self.rank < longer))

    def mean(self, value: float) -> float:
        """The mean over the workers of ``value`` (each passes its own; all must call)."""
        if self.world == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(total)  # NCCL reduces only tensors on the GPU
        return total.item() / self.world


class Prediction(torch.nn.Module):
    """What a policy is trained to predict, as the forward of one module that DDP can wrap
    (DDP synchronises gradients only through its module's forward): an action-chunking
    policy's next ``chunk_size`` actions, another's action."""

    def __init__(self, policy: torch.nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(
        self,
        states: torch.Tensor,
        tasks: torch.Tensor,
        images: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if getattr(self.policy, "chunk_size", 1) > 1:
            return self.policy.forward_chunk(states, tasks, images)
        return self.policy(states, tasks, images)


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
    # This worker among the run's workers; train_loop sets it on Ray Train.
    worker: Worker = field(default_factory=Worker)
    # What fit calls: Prediction(model), wrapped in DDP by train_loop on several workers;
    # ``model`` stays the bare policy, the one checkpoints hold.
    prediction: torch.nn.Module = field(init=False)

    def __post_init__(self) -> None:
        self.prediction = Prediction(self.model)

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
        state = torch.load(folder / "train_state.pt", map_location="cpu", weights_only=False)
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
            meta={
                "dataset_id": self.data.dataset_id,
                "parent": self.parent,
                "step": self.step,
                "workers": self.worker.world,
            },
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
        config, data, worker = self.config, self.data, self.worker
        states = torch.from_numpy(self.stats.normalize_state(data.states)).to(worker.device)
        actions = torch.from_numpy(data.actions).to(worker.device)
        tasks = torch.from_numpy(data.task_index).to(worker.device)
        weights = torch.from_numpy(data.weights).to(worker.device)
        # An action-chunking policy fits the next `chunk` actions of every step at once.
        chunk = getattr(self.model, "chunk_size", 1)
        if chunk > 1:
            targets, mask = (torch.from_numpy(a).to(worker.device) for a in data.chunks(chunk))
            mask = mask.float()
        loader = self._frame_loader()
        self.model.train()
        window: list[float] = []
        while self.step < config.steps:
            idx = torch.randint(0, len(states), (config.batch_size,), generator=self.sampler)
            # The whole minibatch's weight (every worker drew it alike), then this worker's share.
            weight = weights[idx].sum().clamp_min(1e-8)
            idx = worker.share(idx)
            images = self._images(loader, idx)
            idx = idx.to(worker.device)
            predicted = self.prediction(states[idx], tasks[idx], *images)
            if chunk > 1:
                per_step = (predicted - targets[idx]).pow(2).mean(dim=2)
                error = (per_step * mask[idx]).sum(dim=1) / mask[idx].sum(dim=1)
            else:
                error = (predicted - actions[idx]).pow(2).mean(dim=1)
            # This share's part of the minibatch loss, times the workers whose gradients DDP
            # averages: the sum is the gradient of the whole minibatch's loss.
            loss = (error * weights[idx]).sum() / weight * worker.world
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            window.append(loss.item())
            self.step += 1
            if self.step % config.log_every == 0 or self.step == config.steps:
                self.losses.append((self.step, worker.mean(float(np.mean(window)))))
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
            share=self.worker.part(self.config.batch_size),
        )

    def _images(self, loader: FrameLoader | None, idx: torch.Tensor) -> tuple:
        """The model's images argument for the minibatch ``idx``: none for a state policy."""
        if loader is None:
            return ()
        # Shifts seeded by the step: a resumed run augments exactly as the uninterrupted one.
        shifts = torch.Generator().manual_seed(self.config.seed * 2**32 + self.step)
        frames = loader.next(idx).images
        images = prepare(frames, self.stats.images, self.config.augment_shift, shifts)
        return ({camera: x.to(self.worker.device) for camera, x in images.items()},)


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
    """What each Ray Train worker runs: resume from Ray's last checkpoint, report every one.

    Every worker reports at every checkpoint, as Ray Train requires; rank 0 alone writes it."""
    import ray
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    config = TrainConfig(**loop_config["train"])
    run = Run.start(config, ray.get(loop_config["data"]), loop_config["parent_checkpoint"])
    run.worker = Worker.of_ray_train()
    # Onto the worker's device, in DDP on several workers; before the restore, so that the
    # optimiser's state is loaded onto the device of the parameters it belongs to.
    run.prediction = ray.train.torch.prepare_model(run.prediction)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            run.restore(Path(folder))

    def report(run: Run) -> None:
        if run.worker.rank != 0:
            ray.train.report({"step": run.step, "loss": run.losses[-1][1]})
            return
        with tempfile.TemporaryDirectory() as tmp:
            folder = run.save(Path(tmp) / "checkpoint")
            ray.train.report(
                {"step": run.step, "loss": run.losses[-1][1], "losses": run.losses},
                checkpoint=Checkpoint.from_directory(str(folder)),
            )

    run.fit(report, on_step=loop_config.get("fault"))
