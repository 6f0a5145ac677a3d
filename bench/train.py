"""Ray Train against a plain torch loop: the same model, data, steps and checkpoints.

Prints samples/s for both, side by side in one run, and their ratio; Ray's start-up time
separately. Two Ray runs of different lengths give the marginal (start-up amortised)
throughput: (extra steps x batch) / (extra seconds); a clock in the worker gives the loop's
own throughput there, from its first step to its last. The plain loop runs before Ray
starts, so that Ray's idle processes do not share its CPUs, and with one torch thread, as
Ray gives a worker with one CPU (OMP_NUM_THREADS=1): with torch's default of one thread per
core it runs about 10x slower on a busy 2-core machine.

    .venv/bin/python bench/train.py [--steps 100000] [--samples 50000] [--checkpoint-every 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from services.config import Settings, configure_runtime
from services.runtime.ray_driver import ensure_ray
from services.training.config import TrainConfig
from services.training.data import TrainingData
from services.training.job import fit_candidate
from services.training.loop import Run


class StepClock:
    """Per-step hook run in the Ray worker: records when the first and the last step end."""

    def __init__(self, path: Path, last: int) -> None:
        self.path, self.last = str(path), last

    def __call__(self, run: Run) -> None:
        if run.step in (1, self.last):
            with open(self.path, "a") as out:
                out.write(json.dumps([run.step, time.perf_counter()]) + "\n")

    def samples_per_s(self, batch: int) -> float:
        (s0, t0), (s1, t1) = (json.loads(line) for line in Path(self.path).read_text().splitlines())
        return (s1 - s0) * batch / (t1 - t0)


def synthetic(samples: int) -> TrainingData:
    """Pick-place-sized data: 39-dim states, 4-dim actions, one task, Sirius-like weights."""
    rng = np.random.default_rng(0)
    states = rng.normal(size=(samples, 39)).astype(np.float32)
    actions = np.tanh(states[:, :4] @ rng.normal(size=(4, 4))).astype(np.float32)
    weights = rng.choice([0.5, 1.0, 4.0], size=samples).astype(np.float32)
    return TrainingData(
        states, actions, np.zeros(samples, np.int64), weights, ("pick-place",), "bench"
    )


def plain(data: TrainingData, config: TrainConfig, folder: Path) -> float:
    """The same Run.fit that Ray's workers execute, called directly; checkpoints to disk."""
    torch.set_num_threads(1)  # a Ray Train worker gets one CPU, hence one thread
    started = time.perf_counter()
    run = Run.start(config, data, parent=None)
    run.fit(lambda r: r.save(folder / f"step-{r.step}"))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    settings = Settings(home=home)
    configure_runtime(settings)
    data = synthetic(args.samples)
    every = args.checkpoint_every
    config = TrainConfig(steps=args.steps, batch_size=args.batch, checkpoint_every=every)
    short = TrainConfig(steps=args.steps // 4, batch_size=args.batch, checkpoint_every=every)

    plain_full = plain(data, config, home / "plain")
    started = time.perf_counter()
    ensure_ray(settings)
    ray_startup = time.perf_counter() - started

    def ray_seconds(cfg: TrainConfig, clock: StepClock | None = None) -> float:
        return fit_candidate(
            settings,
            data,
            candidate_id=uuid.uuid4().hex[:12],
            parent_checkpoint=None,
            config=cfg,
            fault=clock,  # the per-step hook (a fault drill elsewhere)
        ).seconds

    clock = StepClock(home / "clock.jsonl", args.steps)
    ray_full = ray_seconds(config, clock)
    ray_short = ray_seconds(short)

    samples = args.steps * args.batch
    marginal = (args.steps - short.steps) * args.batch / (ray_full - ray_short)
    rows = [
        ("plain torch loop", plain_full, samples / plain_full),
        ("Ray Train, end to end", ray_full, samples / ray_full),
        ("Ray Train, marginal", ray_full - ray_short, marginal),
        ("Ray Train, worker loop", None, clock.samples_per_s(args.batch)),
    ]
    print(
        f"model: mlp 39->256->256->4, {args.samples} samples, batch {args.batch}, "
        f"{args.steps} steps, checkpoint every {every}"
    )
    print(f"Ray start-up (ray.init, local, no dashboard): {ray_startup:.1f} s")
    print(f"{'':24} {'seconds':>8} {'samples/s':>10}")
    for name, seconds, rate in rows:
        print(f"{name:24} {'' if seconds is None else f'{seconds:.1f}':>8} {rate:10.0f}")
    fixed = ray_full - samples / rows[3][2]
    print(f"Ray Train's fixed cost per run (end to end minus the loop): {fixed:.1f} s")
    print(f"ratio Ray/plain, end to end: {rows[1][2] / rows[0][2]:.2f}")
    print(f"ratio Ray/plain, start-up amortised (marginal): {marginal / rows[0][2]:.2f}")
    print(f"ratio Ray/plain, worker loop: {rows[3][2] / rows[0][2]:.2f}")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
