"""Ray Train in this process: what a training job's driver runs (services/training/ray_job.py).

The run is named after the candidate, so a driver that crashes and runs again restores the
same run from its last checkpoint; ``overwrite`` starts it over. The final checkpoint is
copied to ``checkpoints/<candidate id>`` atomically; once there, training is not repeated.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from services.config import Settings
from services.runtime.ray_driver import ensure_ray
from services.training.config import TrainConfig
from services.training.data import TrainingData
from services.training.loop import WorkerFault, train_loop
from services.training.scaling import check_scaling, scaling_config


@dataclass(frozen=True)
class TrainResult:
    checkpoint_dir: Path
    final_loss: float | None
    losses: list[tuple[int, float]]
    seconds: float
    # Steps in the training data, and its task names.
    samples: int | None = None
    tasks: tuple[str, ...] = ()


def published(final: Path, seconds: float = 0.0) -> TrainResult:
    """The result of the training whose checkpoint was published to ``final``."""
    meta = json.loads((final / "meta.json").read_text())
    losses = [(int(step), float(loss)) for step, loss in meta.get("losses", [])]
    tasks = tuple(meta.get("tasks", ()))
    return TrainResult(final, meta.get("final_loss"), losses, seconds, meta.get("samples"), tasks)


def fit_candidate(
    settings: Settings,
    data: TrainingData,
    *,
    candidate_id: str,
    parent_checkpoint: Path | None,
    config: TrainConfig,
    fault: WorkerFault | None = None,
) -> TrainResult:
    """Train (or fine-tune from ``parent_checkpoint``) on Ray Train; ``fault`` is a drill that
    kills the worker once mid-run, to prove that the run resumes from its last checkpoint."""
    final = settings.checkpoints_dir / candidate_id
    if final.exists() and not config.overwrite:
        return published(final)

    check_scaling(settings, config.batch_size)
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    storage = settings.root / "ray_results"
    run_name = f"candidate-{candidate_id}"
    if (storage / run_name).exists() and not config.resume:
        if not config.overwrite:
            raise RuntimeError(
                f"an interrupted training run of candidate {candidate_id} exists: "
                "pass resume to continue it or overwrite to start over"
            )
        shutil.rmtree(storage / run_name)

    started = time.perf_counter()
    ensure_ray(settings)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "train": asdict(config),
            "data": ray.put(data),
            "parent_checkpoint": str(parent_checkpoint) if parent_checkpoint else None,
            "fault": fault,
        },
        scaling_config=scaling_config(settings.training),
        run_config=RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=2),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training of candidate {candidate_id} ended without a checkpoint")
    losses = [(int(step), float(loss)) for step, loss in result.metrics.get("losses", [])]
    final_loss = losses[-1][1] if losses else None
    _publish(
        result.checkpoint,
        final,
        losses=losses,
        final_loss=final_loss,
        samples=len(data),
        tasks=list(data.tasks),
    )
    return published(final, time.perf_counter() - started)


def _publish(checkpoint, final: Path, **meta_extra) -> None:
    """Copy Ray's last checkpoint to its permanent place, all at once."""
    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with checkpoint.as_directory() as folder:
        shutil.copytree(folder, tmp)
    (tmp / "train_state.pt").unlink(missing_ok=True)
    meta = json.loads((tmp / "meta.json").read_text())
    meta.update(meta_extra)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
