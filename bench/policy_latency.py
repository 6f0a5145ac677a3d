"""Inference latency of every registered policy at batch 1 on the CPU, as a robot calls it.

Each policy is saved as a checkpoint and loaded back (``load_checkpoint``), then called through
``LoadedPolicy.act`` with one observation: the state, and for a vision policy one camera frame
(resized by ``resize_frames`` when the camera's resolution is not the policy's, normalised with
the checkpoint's image statistics). Per policy kind:

- state: the state alone (goal: p99 at most 5 ms);
- vision: one 96 px camera, given frames at 96 px (no resize) and at 480 px (the largest the
  simulated cameras render, resized every call) (goal: p99 at most 30 ms);
- an action-chunking policy also through ``start_episode()`` (temporal ensembling, what its
  users run).

Sizes are training's: pick-place's 39-dim state and 4-dim action, ``TrainConfig``'s hidden
widths, the policies' default encoder. The cases run in turns, in blocks of 100 calls, so
that every case sees the same load on a shared machine; p50 and p99 are over every call, of
the wall-clock time (the latency, judged against the goals) and of the calling thread's CPU
time (what a call costs on a core of its own, which other work on a shared machine does not
inflate). One torch thread by default: a robot's control loop gets a core, not the machine.

``--realtime`` runs the calls at real-time priority (SCHED_FIFO, as a robot's control thread
runs, e.g. under ros2_control), so that other work on a shared machine does not preempt them:
the wall-clock figures then show the policy, not the machine's load. It needs the permission
to set it (root or CAP_SYS_NICE) and writes policy_latency-realtime.json instead.

    .venv/bin/python bench/policy_latency.py [--calls 2000] [--threads 1] [--realtime]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `python bench/policy_latency.py`

from policies import available_policies, make_policy  # noqa: E402
from policies.checkpoint import LoadedPolicy, load_checkpoint, save_checkpoint  # noqa: E402
from policies.images import CameraInput, ImageStats  # noqa: E402
from policies.normalization import NormalizationStats  # noqa: E402
from policies.registry import config_class  # noqa: E402
from services.training.config import TrainConfig  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STATE_DIM, ACTION_DIM, TASK = 39, 4, "pick-place"
# p99 goals of issue 20, ms.
GOALS = {"state": 5.0, "vision": 30.0}
BLOCK = 100


def checkpoint(name: str, cameras: tuple[CameraInput, ...], folder: Path) -> LoadedPolicy:
    """A freshly initialised policy, saved and loaded as a robot loads it."""
    torch.manual_seed(0)
    config = config_class(name)(
        state_dim=STATE_DIM,
        action_dim=ACTION_DIM,
        tasks=(TASK,),
        hidden=TrainConfig().hidden,
        cameras=cameras,
    )
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (8, 96, 96, 3), dtype=np.uint8)
    stats = NormalizationStats.from_arrays(
        rng.normal(size=(100, STATE_DIM)).astype(np.float32),
        rng.uniform(-1, 1, (100, ACTION_DIM)).astype(np.float32),
        {c.name: ImageStats.from_frames(frames) for c in cameras},
    )
    path = folder / f"{name}-{len(cameras)}"
    save_checkpoint(path, make_policy(config), config, stats, meta={})
    return load_checkpoint(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per case")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per case first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--px", type=int, default=96, help="the vision policy's input side")
    parser.add_argument("--camera-px", type=int, default=480, help="the resized camera's side")
    parser.add_argument("--realtime", action="store_true", help="SCHED_FIFO, as a robot's loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
        except PermissionError as error:
            raise SystemExit(f"--realtime needs root or CAP_SYS_NICE: {error}") from None
    results = RESULTS / f"policy_latency{'-realtime' if args.realtime else ''}.json"
    rng = np.random.default_rng(1)
    state = rng.normal(size=STATE_DIM).astype(np.float32)
    camera = CameraInput("front", args.px, args.px, "h264")
    at_size = {"front": rng.integers(0, 256, (args.px, args.px, 3), dtype=np.uint8)}
    large = {"front": rng.integers(0, 256, (args.camera_px, args.camera_px, 3), dtype=np.uint8)}

    # (policy, kind, input, call)
    cases: list[tuple[str, str, str, Callable[[], np.ndarray]]] = []
    with tempfile.TemporaryDirectory(prefix="flywheel-latency-") as folder:
        for name in available_policies():
            state_policy = checkpoint(name, (), Path(folder))
            vision = checkpoint(name, (camera,), Path(folder))
            encoder = vision.config.image_channels
            frames = f"{args.px} px frames"
            resized = f"{args.camera_px} px frames, resized"
            cases += [
                (name, "state", "state", lambda p=state_policy: p.act(state, TASK)),
                (name, "vision", frames, lambda p=vision: p.act(state, TASK, at_size)),
                (name, "vision", resized, lambda p=vision: p.act(state, TASK, large)),
            ]
            if state_policy.chunk_size > 1:
                for kind, policy, images in (
                    ("state", state_policy, None),
                    ("vision", vision, at_size),
                ):
                    # One episode as long as the calls: the ensemble is full after chunk_size.
                    actor = policy.start_episode()
                    label = "state" if images is None else frames
                    cases.append(
                        (
                            f"{name} episode actor",
                            kind,
                            label,
                            lambda a=actor, i=images: a(state, TASK, i),
                        )
                    )

    # Per case, each call's wall-clock seconds (the latency) and its thread's CPU seconds
    # (what the call costs on a core of its own: the machine's other work does not count).
    wall: list[list[float]] = [[] for _ in cases]
    cpu: list[list[float]] = [[] for _ in cases]
    for _, _, _, call in cases:
        for _ in range(args.warmup):
            call()
    for _ in range(-(-args.calls // BLOCK)):
        for case, (_, _, _, call) in enumerate(cases):
            for _ in range(BLOCK):
                started, started_cpu = time.perf_counter(), time.thread_time()
                call()
                wall[case].append(time.perf_counter() - started)
                cpu[case].append(time.thread_time() - started_cpu)

    # Other work on the machine shows in the wall-clock tails: the load average says how much.
    load = os.getloadavg()
    print(
        f"load average {load[0]:.1f} on {os.cpu_count()} CPUs, "
        f"{'real-time (SCHED_FIFO)' if args.realtime else 'normal'} scheduling; "
        f"batch 1, CPU, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}; "
        f"{len(wall[0])} calls per case (after {args.warmup} warm-up), in turns; "
        f"state {STATE_DIM}, action {ACTION_DIM}, hidden {TrainConfig().hidden}; "
        f"vision: one {args.px} px camera, encoder channels {encoder}"
    )
    columns = ("p50 ms", "p99 ms", "cpu p50 ms", "cpu p99 ms")
    header = f"| {'policy':<18} | {'input':<22} | " + " | ".join(columns) + " | goal p99 ms |"
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")
    rows = []
    for (policy, kind, label, _), times, cpu_times in zip(cases, wall, cpu, strict=True):
        p50, p99, cpu50, cpu99 = (
            float(np.percentile(t, q) * 1e3) for t in (times, cpu_times) for q in (50, 99)
        )
        goal = GOALS[kind]
        met = "met" if p99 <= goal else "MISSED"
        figures = " | ".join(
            f"{v:{len(c)}.2f}" for v, c in zip((p50, p99, cpu50, cpu99), columns, strict=True)
        )
        print(f"| {policy:<18} | {label:<22} | {figures} | {goal:4.0f} {met:<6} |")
        rows.append(
            {
                "policy": policy,
                "kind": kind,
                "input": label,
                "p50_ms": p50,
                "p99_ms": p99,
                "mean_ms": float(np.mean(times) * 1e3),
                "cpu_p50_ms": cpu50,
                "cpu_p99_ms": cpu99,
                "goal_p99_ms": goal,
                "met": p99 <= goal,
            }
        )
    results.write_text(
        json.dumps(
            {
                "config": {
                    **vars(args),
                    "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "load_average_1min": load[0],
                    "cpus": os.cpu_count(),
                    "state_dim": STATE_DIM,
                    "action_dim": ACTION_DIM,
                    "hidden": list(TrainConfig().hidden),
                    "image_channels": list(encoder),
                },
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written: {results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
