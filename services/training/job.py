"""Running a training job on Ray Train: a local Ray owned by Flywheel, or any cluster by address.

The run is named after the candidate, so a driver that crashes and runs again restores the
same run from its last checkpoint; ``overwrite`` starts it over. The final checkpoint is
copied to ``checkpoints/<candidate id>`` atomically; once there, training is not repeated.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from services.config import Settings
from services.training.config import TrainConfig
from services.training.data import TrainingData
from services.training.loop import WorkerFault, train_loop

# Ray puts Unix sockets under its temp folder; their paths must stay under ~107 bytes.
MAX_RAY_TEMP_LEN = 48


@dataclass(frozen=True)
class TrainResult:
    checkpoint_dir: Path
    final_loss: float | None
    losses: list[tuple[int, float]]
    seconds: float


def ray_temp_dir(settings: Settings) -> Path:
    wanted = settings.ray_dir
    if len(str(wanted)) <= MAX_RAY_TEMP_LEN:
        return wanted
    # Too deep for Ray's socket paths: a short folder named after the home it belongs to.
    return Path("/tmp") / f"flywheel-ray-{hashlib.sha1(str(wanted).encode()).hexdigest()[:10]}"


def ensure_ray(settings: Settings) -> None:
    """Connect to ``settings.ray_address``, or start a local Ray sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, log_to_driver=False)
        return
    temp = ray_temp_dir(settings)
    temp.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=max(2, os.cpu_count() or 2),
        include_dashboard=False,
        _temp_dir=str(temp),
        log_to_driver=False,
        configure_logging=False,
    )


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def train_candidate(
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
        from policies.checkpoint import load_checkpoint

        meta = load_checkpoint(final).meta
        losses = [(int(step), float(loss)) for step, loss in meta.get("losses", [])]
        return TrainResult(final, meta.get("final_loss"), losses, 0.0)

    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
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
        scaling_config=ScalingConfig(num_workers=1, use_gpu=False),
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
    _publish(result.checkpoint, final, losses, final_loss)
    return TrainResult(final, final_loss, losses, time.perf_counter() - started)


def _publish(checkpoint, final: Path, losses: list, final_loss: float | None) -> None:
    """Copy Ray's last checkpoint to its permanent place, all at once."""
    import json

    tmp = final.with_name(f".{final.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with checkpoint.as_directory() as folder:
        shutil.copytree(folder, tmp)
    (tmp / "train_state.pt").unlink(missing_ok=True)
    meta = json.loads((tmp / "meta.json").read_text())
    meta.update(losses=losses, final_loss=final_loss)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
