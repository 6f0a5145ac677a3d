"""Ray Train against a plain torch loop: the same model, data, steps and checkpoints.

Prints samples/s for both, side by side in one run, and their ratio; Ray's start-up time
separately. Two Ray runs of different lengths give the marginal (start-up amortised)
throughput: (extra steps x batch) / (extra seconds); a clock in the worker gives the loop's
own throughput there, from its first step to its last. The plain loop runs before Ray
starts, so that Ray's idle processes do not share its CPUs, and with one torch thread, as
Ray gives a worker with one CPU (OMP_NUM_THREADS=1): with torch's default of one thread per
core it runs about 10x slower on a busy 2-core machine.

``--vision`` trains the MLP with one camera instead: Meta-World pick-place frames rendered by
MuJoCo and stored as the episode store stores them (H.264, the default VideoFormat), decoded
by the loop's DataLoader workers. It also prints where a step's time goes, each part timed
one after another in this process: decode (FrameReader and resize, a loader worker's share),
augmentation (random shift and normalisation), forward (model and loss), backward (gradients
and the optimiser step).

    .venv/bin/python bench/train.py [--steps 100000] [--samples 50000] [--checkpoint-every 1000]
    .venv/bin/python bench/train.py --vision [--steps 400] [--batch 64] [--image-px 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `python bench/train.py`

from bench.video_codec import KEY, render, write_store  # noqa: E402
from policies.images import ImageStats  # noqa: E402
from services.config import Settings, configure_runtime  # noqa: E402
from services.episode_store.frames import FrameReader, locate  # noqa: E402
from services.episodes.cameras import VideoFormat  # noqa: E402
from services.runtime.ray_driver import ensure_ray  # noqa: E402
from services.training.config import TrainConfig  # noqa: E402
from services.training.data import RowFrames, TrainingData  # noqa: E402
from services.training.frames import FrameLoader, prepare  # noqa: E402
from services.training.job import fit_candidate  # noqa: E402
from services.training.loop import Run  # noqa: E402

CAMERA = KEY.removeprefix("observation.images.")


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


def vision(root: Path, episodes: int, steps: int, size: int) -> TrainingData:
    """Pick-place frames of one camera for ``episodes`` x ``steps`` rows (4 episodes rendered,
    reused in turn: decoding costs what the pictures' kind costs), stored at ``root``; states
    as ``synthetic``, actions the hand's place in the frame."""
    rendered, labels, fps = render(min(episodes, 4), steps, size)
    root.mkdir(parents=True)
    table, _ = write_store(root, [rendered[e % 4] for e in range(episodes)], VideoFormat(), fps, 8)
    data = synthetic(episodes * steps)
    episode_index = np.repeat(np.arange(episodes), steps)
    frame_index = np.tile(np.arange(steps), episodes)
    located = locate(table, KEY, episode_index, frame_index, fps)
    with FrameReader(root) as reader:
        stats = ImageStats.from_frames(reader.frames(KEY, located[:: max(1, len(located) // 64)]))
    frames = RowFrames(
        root=str(root),
        cameras=(CAMERA,),
        episode_index=episode_index,
        frame_index=frame_index,
        files={CAMERA: np.array([file for file, _ in located])},
        times={CAMERA: np.array([t for _, t in located])},
        fps={CAMERA: fps},
        mean={CAMERA: stats.mean},
        std={CAMERA: stats.std},
    )
    hand = np.concatenate([labels[e % 4] for e in range(episodes)]).astype(np.float32)
    actions = np.tanh(np.c_[hand - hand.mean(0), np.zeros(len(hand))]).astype(np.float32)
    return TrainingData(
        data.states, actions, data.task_index, data.weights, data.tasks, "bench", frames=frames
    )


def where_time_goes(data: TrainingData, config: TrainConfig, batches: int) -> dict[str, float]:
    """Seconds per minibatch of each part of a vision step, timed one after another."""
    torch.set_num_threads(1)
    run = Run.start(config, data, parent=None)
    loader = FrameLoader(
        data.frames, run.sampler, batch_size=config.batch_size, image_px=config.image_px, workers=0
    )
    states = torch.from_numpy(run.stats.normalize_state(data.states))
    actions, tasks = torch.from_numpy(data.actions), torch.from_numpy(data.task_index)
    seconds = dict.fromkeys(("decode", "augmentation", "forward", "backward"), 0.0)
    for step in range(batches):
        idx = torch.randint(0, len(data), (config.batch_size,), generator=run.sampler)
        batch = loader.next(idx)
        seconds["decode"] += batch.seconds
        started = time.perf_counter()
        shifts = torch.Generator().manual_seed(step)
        images = prepare(batch.images, run.stats.images, config.augment_shift, shifts)
        augmented = time.perf_counter()
        loss = (run.model(states[idx], tasks[idx], images) - actions[idx]).pow(2).mean()
        forward = time.perf_counter()
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        seconds["augmentation"] += augmented - started
        seconds["forward"] += forward - augmented
        seconds["backward"] += time.perf_counter() - forward
    return {part: total / batches for part, total in seconds.items()}


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
    parser.add_argument("--vision", action="store_true", help="the MLP with one camera")
    parser.add_argument("--episodes", type=int, default=48, help="--vision: episodes stored")
    parser.add_argument("--episode-steps", type=int, default=50, help="--vision: their steps")
    parser.add_argument("--size", type=int, default=96, help="--vision: the camera's side, px")
    parser.add_argument("--image-px", type=int, default=64, help="--vision: the policy's input")
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--breakdown", type=int, default=20, help="--vision: minibatches timed")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    settings = Settings(home=home)
    configure_runtime(settings)
    every = args.checkpoint_every
    # Losses are logged before the first checkpoint reports them.
    seeing: dict = {"log_every": min(100, every)}
    if args.vision:
        data = vision(home / "store", args.episodes, args.episode_steps, args.size)
        seeing.update(cameras=(CAMERA,), image_px=args.image_px, loader_workers=args.loader_workers)
        model = (
            f"mlp 39->256->256->4 + a {args.image_px} px camera ({args.size} px stored, "
            f"{args.loader_workers} loader workers), {len(data)} samples"
        )
    else:
        data = synthetic(args.samples)
        model = f"mlp 39->256->256->4, {args.samples} samples"
    config = TrainConfig(steps=args.steps, batch_size=args.batch, checkpoint_every=every, **seeing)
    short = TrainConfig(
        steps=args.steps // 4, batch_size=args.batch, checkpoint_every=every, **seeing
    )

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
    print(f"model: {model}, batch {args.batch}, {args.steps} steps, checkpoint every {every}")
    print(f"Ray start-up (ray.init, local, no dashboard): {ray_startup:.1f} s")
    print(f"{'':24} {'seconds':>8} {'samples/s':>10}")
    for name, seconds, rate in rows:
        print(f"{name:24} {'' if seconds is None else f'{seconds:.1f}':>8} {rate:10.0f}")
    fixed = ray_full - samples / rows[3][2]
    print(f"Ray Train's fixed cost per run (end to end minus the loop): {fixed:.1f} s")
    print(f"ratio Ray/plain, end to end: {rows[1][2] / rows[0][2]:.2f}")
    print(f"ratio Ray/plain, start-up amortised (marginal): {marginal / rows[0][2]:.2f}")
    print(f"ratio Ray/plain, worker loop: {rows[3][2] / rows[0][2]:.2f}")
    if args.vision:
        parts = where_time_goes(data, config, args.breakdown)
        total = sum(parts.values())
        print(f"where a step's time goes ({args.breakdown} minibatches, one after another):")
        for part, seconds in parts.items():
            print(f"  {part:13} {1e3 * seconds:8.1f} ms/minibatch {100 * seconds / total:5.1f}%")
        rate = args.batch / parts["decode"]
        print(
            f"  decode alone: {rate:.0f} samples/s per loader worker; "
            f"training alone: {args.batch / (total - parts['decode']):.0f} samples/s"
        )
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
