"""How long deleting episodes takes: the rewrite of the shared Parquet files they sit in.

Writes a store of ``--files`` data files of ``--episodes`` episodes each (``--steps`` steps,
39-D state as in bench/ingest.py's ROS corpora, 8-D action), through the store's own writer,
then deletes one episode from every file (the worst case: every file is shared) and prints
the seconds per file rewritten, the MB rewritten per second, and what a dry run's lookup of
the files takes. Only the episode store is timed: the SQL part of a deletion is one
transaction of a few statements per 500 episodes.

    python bench/deletion.py [--files 20] [--episodes 200] [--steps 200]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's services, not an installed copy

from services.episode_store.parquet import EpisodeStore  # noqa: E402
from services.episodes.model import RawEpisode  # noqa: E402


def episode(rng: np.random.Generator, steps: int, n: int) -> RawEpisode:
    return RawEpisode(
        episode_uuid=f"bench-{n}",
        robot_id=f"robot-{n % 8:02d}",
        task="pick-place",
        policy_version="1",
        kind="deployment",
        operator_id=None,
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        control_hz=10.0,
        states=rng.normal(size=(steps, 39)).astype(np.float32),
        actions=rng.normal(size=(steps, 8)).astype(np.float32),
        control_source=["policy"] * steps,
        reasons=[None] * steps,
        outcome="success",
        interventions=[],
        timestamps=np.arange(steps) / 10.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-deletion-") as folder:
        store = EpisodeStore(Path(folder))
        victims = set()
        for f in range(args.files):
            first = f * args.episodes
            batch = [
                (f"ep{first + i:08d}", first + i, episode(rng, args.steps, first + i))
                for i in range(args.episodes)
            ]
            store.write_batch(batch)
            victims.add(batch[args.episodes // 2][0])
        store.write_meta()
        size = sum((store.root / f).stat().st_size for f in store.data_files()) / 2**20
        start = time.perf_counter()
        held = store.files_holding(victims)
        lookup = time.perf_counter() - start
        start = time.perf_counter()
        rewritten = store.drop_episodes(victims)
        seconds = time.perf_counter() - start
    total = args.files * args.episodes
    print(
        f"store: {args.files} data files, {total} episodes, {total * args.steps} frames, "
        f"{size:.1f} MB"
    )
    print(f"dry-run lookup of the files holding {len(victims)} episodes: {lookup:.3f} s")
    print(
        f"deleting {len(victims)} episodes, one per file: {len(rewritten)} files rewritten in "
        f"{seconds:.2f} s ({seconds / len(rewritten):.3f} s per file, {size / seconds:.1f} MB/s)"
    )
    assert len(held) == len(rewritten) == args.files


if __name__ == "__main__":
    main()
