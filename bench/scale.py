"""The nightly cycle as the fleet grows: 4, 16, 64 and 100 robots (issue 22).

    .venv/bin/python bench/scale.py [--robots 4,16,64,100] [--episodes 12] [--quick]

1. A base home, made once: the lab's demonstrations and night 1 of the simulated fleet
   (`flywheel nightly --nights 1 --robots 4`) give it a champion.
2. A pool of real shift episodes: the champion works pick-place in the simulator, the scripted
   operator takes over as in every shift, and both cameras are rendered (the simulated
   fleet's own ``sim.episode.run_episode``).
3. For each fleet size N, a copy of the base home receives one shift's uploads of N robots
   (``--episodes`` each), synthesised from the pool: each upload is a pool episode with a
   robot, an id and a start time of its own and a little noise on its states and frames (so
   that no upload is a duplicate of another and ingest does all its work), written as a robot
   writes it (MCAP, the cameras as H.264). Then, each in a fresh process as the nightly
   schedule starts one:
   - the night: the nightly flow, every stage timed (ingest, dataset, training, evaluation,
     approval, rollout);
   - an empty night right after it (nothing new to ingest): the night's fixed cost.

Training steps and evaluation seeds are fixed settings (FLYWHEEL_TRAIN_STEPS,
FLYWHEEL_EVAL_EPISODES below), so those stages cost the same at every fleet size; ingest and
the dataset build are the stages that grow with the data. The table gives each stage's
seconds and, for the stages that read the night's data, the growth against the data's
(seconds at N over seconds at the smallest N, beside episodes at N over episodes at the
smallest N): at most linear means the first is not above the second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

TASK = "pick-place"
# Settings of every home of the benchmark (the rest are Flywheel's defaults).
SETTINGS = {
    "FLYWHEEL_TASKS": json.dumps([TASK]),
    "FLYWHEEL_AUTO_APPROVE": "true",
    "FLYWHEEL_EVAL_EPISODES": "20",
    "FLYWHEEL_TRAIN_STEPS": "1000",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}
# The stage flows of the nightly flow (flows/stages.py), in the order a night runs them.
STAGES = (
    "roll-out-late-approvals",
    "ingest-logs",
    "build-dataset",
    "train-candidate",
    "evaluate-candidate",
    "approve-candidate",
    "roll-out",
)
# The stages whose work grows with the night's data.
DATA_STAGES = ("ingest-logs", "build-dataset")
POOL_EPISODES = 24


def environment(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        **SETTINGS,
        "FLYWHEEL_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
    }


def flywheel(home: Path, *args: str) -> None:
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "flywheel"), *args],
        env=environment(home),
        check=True,
        stdout=subprocess.DEVNULL,
    )


# --- the base home and the pool of episodes ----------------------------------------------


def make_base(base: Path) -> None:
    """A home with a champion: the lab's demos and night 1 (whose shift finds no policy yet)."""
    from flywheel import settle_home

    if (base / "ready").exists():
        return
    shutil.rmtree(base, ignore_errors=True)
    flywheel(base, "nightly", "--nights", "1", "--robots", "4", "--episodes", "1")
    settle_home(base)
    (base / "ready").touch()


def record_pool(base: Path, count: int) -> list:
    """``count`` episodes of the champion at work with the operator, cameras rendered."""
    os.environ.update(environment(base))
    from services.config import get_settings
    from services.registry.ledger import champion_of
    from services.registry.mlflow_registry import load_policy
    from services.store import session_scope
    from services.twin.render import CameraSetup
    from services.twin.tasks import make_env
    from sim.episode import robot_cameras, run_episode
    from sim.operator import Operator

    settings = get_settings()
    with session_scope(settings.db_url) as session:
        version = champion_of(session=session)
    policy = load_policy(settings, version)
    setup = CameraSetup.from_settings(settings.fleet)
    env, operator = make_env(TASK), Operator()
    pool = []
    with robot_cameras(env, setup) as cameras:
        for seed in range(count):
            pool.append(
                run_episode(
                    env,
                    7_000_000 + seed,
                    policy=policy.act,
                    operator=operator,
                    robot_id="pool",
                    policy_version=version,
                    started_at=datetime(2026, 1, 1, tzinfo=UTC),
                    episode_uuid=f"pool-{seed}",
                    cameras=cameras,
                    camera_every=setup.every(env.control_hz) if setup else 1,
                )
            )
    return pool


def write_shift(pool: list, logs: Path, robots: int, episodes: int) -> tuple[int, int]:
    """One shift's uploads of ``robots`` robots, synthesised from the pool: (files, bytes)."""
    from dataclasses import replace

    from services.config import get_settings
    from services.twin.render import CameraSetup
    from sim.episode import upload

    setup = CameraSetup.from_settings(get_settings().fleet)
    rng = np.random.default_rng(robots)
    files = size = 0
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)
    for r in range(robots):
        robot = f"robot-{r:03d}"
        for e in range(episodes):
            source = pool[(r * episodes + e) % len(pool)]
            frames = {
                name: [(t, _jitter(f, rng)) for t, f in track]
                for name, track in source.camera_frames.items()
            }
            noise = rng.normal(0, 1e-4, source.states.shape).astype(source.states.dtype)
            recording = replace(
                source,
                episode_uuid=f"{robot}-{e:04d}",
                robot_id=robot,
                started_at=start + timedelta(minutes=10 * e),
                states=source.states + noise,
                camera_frames=frames,
            )
            path = upload(
                recording, logs / robot / "shift" / f"{recording.episode_uuid}.mcap", setup
            )
            files, size = files + 1, size + path.stat().st_size
    return files, size


def _jitter(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The frame with a few pixels off by one: another upload, the same picture."""
    out = frame.copy()
    rows = rng.integers(0, frame.shape[0], 8)
    cols = rng.integers(0, frame.shape[1], 8)
    out[rows, cols] = np.clip(out[rows, cols].astype(np.int16) + 1, 0, 255).astype(np.uint8)
    return out


# --- one night in a process of its own --------------------------------------------------


def night_worker(home: Path, out: Path) -> None:
    """Run one nightly flow on ``home``; write its stage times and outcome to ``out``."""
    began = time.perf_counter()
    os.environ.update(environment(home))
    from flows.nightly import nightly
    from flows.progress import listening
    from services.config import configure_runtime, get_settings

    settings = get_settings()
    configure_runtime(settings)
    started: dict[str, float] = {}
    seconds: dict[str, float] = {}

    def timer(stage: str, event: str) -> None:
        if event == "started":
            started[stage] = time.perf_counter()
        elif stage in started:
            seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started.pop(stage)

    imported = time.perf_counter()
    with listening(timer):
        report = nightly(settings)
    ended = time.perf_counter()
    out.write_text(
        json.dumps(
            {
                "stages": seconds,
                "flow_s": ended - imported,
                "imports_s": imported - began,
                "outcome": report.get("outcome"),
            }
        )
    )


def run_night(home: Path, out: Path) -> dict:
    """A night in a fresh process; its record with the process's own wall time."""
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--night-worker", str(home), str(out)],
        env=environment(home),
        check=True,
    )
    record = json.loads(out.read_text())
    record["process_s"] = time.perf_counter() - began
    return record


# --- the run ------------------------------------------------------------------------------


def measure(base: Path, pool: list, work: Path, robots: int, episodes: int) -> dict:
    from flywheel import copy_home

    home = work / f"robots-{robots}"
    shutil.rmtree(home, ignore_errors=True)
    copy_home(base, home)
    os.environ.update(environment(home))
    files, size = write_shift(pool, home / "fleet-logs", robots, episodes)
    night = run_night(home, work / f"night-{robots}.json")
    empty = run_night(home, work / f"empty-{robots}.json")
    shutil.rmtree(home, ignore_errors=True)
    return {
        "robots": robots,
        "episodes": files,
        "upload_mb": size / 2**20,
        "night": night,
        "empty": empty,
    }


def print_table(rows: list[dict]) -> None:
    first = rows[0]
    print(
        f"\nnightly cycle per fleet size ({first['episodes'] // first['robots']} episodes per "
        f"robot; training {SETTINGS['FLYWHEEL_TRAIN_STEPS']} steps and "
        f"{SETTINGS['FLYWHEEL_EVAL_EPISODES']} evaluation seeds at every size)\n"
    )
    shown = [s for s in STAGES if any(s in r["night"]["stages"] for r in rows)]
    header = ["robots", "episodes", "upload MB", *shown, "night (process)", "empty night"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [str(r["robots"]), str(r["episodes"]), f"{r['upload_mb']:.0f}"]
        cells += [f"{r['night']['stages'].get(s, 0.0):.1f}" for s in shown]
        cells += [f"{r['night']['process_s']:.0f} s", f"{r['empty']['process_s']:.1f} s"]
        print("| " + " | ".join(cells) + " |")
    print("\ngrowth against the smallest fleet (seconds ratio vs episodes ratio):")
    for r in rows[1:]:
        data = r["episodes"] / first["episodes"]
        parts = [
            f"{s} {r['night']['stages'][s] / first['night']['stages'][s]:.2f}x"
            for s in DATA_STAGES
            if first["night"]["stages"].get(s) and s in r["night"]["stages"]
        ]
        per_episode = r["night"]["stages"].get("ingest-logs", 0.0) / r["episodes"]
        print(
            f"  {r['robots']} robots: data {data:.1f}x; {', '.join(parts)}; "
            f"ingest {per_episode:.2f} s per episode"
        )
    print("\nempty night (nothing new to ingest), in a fresh process as the schedule starts one:")
    for r in rows:
        e = r["empty"]
        print(
            f"  after {r['robots']} robots: {e['process_s']:.1f} s in all ({e['imports_s']:.1f} s "
            f"start-up and imports, {e['flow_s']:.1f} s the flow): {e['outcome']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--robots", default="4,16,64,100", help="fleet sizes, comma-separated")
    parser.add_argument("--episodes", type=int, default=12, help="episodes per robot per shift")
    parser.add_argument("--quick", action="store_true", help="4 and 16 robots, 4 episodes each")
    parser.add_argument("--work", type=Path, default=ROOT / ".flywheel" / "bench-scale")
    parser.add_argument("--night-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.night_worker:
        return night_worker(*args.night_worker)
    sizes = [4, 16] if args.quick else [int(n) for n in args.robots.split(",")]
    episodes = 4 if args.quick else args.episodes
    if sorted(sizes) != sizes or sizes[0] < 1:
        parser.error("--robots: increasing positive sizes")
    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    base = args.work / "base"
    make_base(base)
    print(f"base home ready ({time.perf_counter() - began:.0f} s)", flush=True)
    pool = record_pool(base, POOL_EPISODES)
    print(
        f"pool of {len(pool)} episodes recorded ({time.perf_counter() - began:.0f} s)", flush=True
    )
    rows = []
    for robots in sizes:
        rows.append(measure(base, pool, args.work, robots, episodes))
        print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    print(
        f"\nload average at the end: {os.getloadavg()[0]:.1f}; "
        f"{time.perf_counter() - began:.0f} s in all"
    )


if __name__ == "__main__":
    main()
