"""Flywheel's ingest against the raw decode speed of each format's own library.

For every format it generates a corpus (default 500 MB; distinct episodes of a Meta-World
sized arm: 39-D state, 4-D action, 200 steps at 10 Hz), then, each in a fresh process:

- raw:  the format library alone decodes every message / array / row of the corpus
        (mcap + json, mcap-ros2-support, rosbags, h5py, pyarrow); for the JSON MCAP contract
        also mcap + orjson, the JSON decoder ingest uses;
- ingest: ``ingest_logs`` on a fresh FLYWHEEL_HOME (hash, decode, align, validate with Great
        Expectations, write Parquet, index in SQLite), on a quarter of the corpus and on all
        of it, to show that peak memory stays flat as the corpus grows;
- floor (robomimic, LeRobot: the formats whose library only copies arrays; and the JSON MCAP
        contract decoded with orjson): the least any ingest that keeps the frames must do, with
        libraries alone: the raw decode, SHA-256 of the source bytes, the frames written to
        Parquet as the episode store writes them.

It prints MB/s and episodes/s for both, the ratio raw/ingest (ingest's speed over the raw
decode's; the goal is >= 0.8, and >= 3 for the ROS formats, whose state and action ingest
decodes in batches: docs/ingest.md), the same ratio in CPU seconds (steadier on a shared
machine), the ceiling raw/floor (the best ratio that storing the frames allows at all), for the
array formats ingest against the store floor, floor/ingest (the goal is >= 0.8), and peak RSS.
The corpus lives in a scratch folder that is removed afterwards (check ``df -h``).

    .venv/bin/python bench/ingest.py [--size-mb 500] [--formats mcap,ros1-bag,...] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FORMATS = ("mcap", "ros2-mcap", "ros1-bag", "ros2-bag", "robomimic", "lerobot")
STATE_DIM, ACTION_DIM, STEPS, HZ = 39, 4, 200, 10.0
PARTS = 4  # the corpus is written in four folders; the quarter run ingests the first


# -- generating ---------------------------------------------------------------------------------


def _arrays(seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(STEPS, STATE_DIM))
    actions = rng.uniform(-1, 1, size=(STEPS, ACTION_DIM))
    sources = ["policy"] * STEPS
    start = int(rng.integers(20, STEPS - 40))
    sources[start : start + 15] = ["operator"] * 15
    return states, actions, sources


def _write_mcap(seed: int, folder: Path) -> None:
    from datetime import UTC, datetime

    from services.episodes.model import EpisodeRecording
    from services.ingest.formats.mcap_writer import write_episode_mcap

    states, actions, sources = _arrays(seed)
    recording = EpisodeRecording(
        episode_uuid=str(seed),
        robot_id=f"robot-{seed % 8:02d}",
        task="pick-place",
        policy_version="3",
        kind="deployment",
        operator_id="op-1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        control_hz=HZ,
        states=states,
        actions=actions,
        control_source=sources,
        reasons=[None] * STEPS,
        outcome="success" if seed % 3 else "failure",
    )
    write_episode_mcap(recording, folder / f"e{seed:06d}.mcap")


def _ros_messages(seed: int):
    from tests.ingest.ros_logs import FLOAT_ARRAY, JOINT_STATE, STRING, T0, Msg

    states, actions, sources = _arrays(seed)
    start = T0 + seed * 10**11
    info = {"robot_id": f"robot-{seed % 8:02d}", "task": "pick-place", "policy_version": "3"}
    messages = [Msg("/flywheel/episode_info", STRING, start - 2, json.dumps(info))]
    current = None
    for i in range(STEPS):
        at = start + i * 100_000_000
        messages.append(Msg("/joint_states", JOINT_STATE, at - 1, states[i].tolist()))
        if sources[i] != current:
            messages.append(Msg("/flywheel/control_source", STRING, at - 1, sources[i]))
            current = sources[i]
        messages.append(Msg("/flywheel/action", FLOAT_ARRAY, at, actions[i].tolist()))
    messages.append(Msg("/flywheel/outcome", STRING, at + 1, "success"))
    return messages


def _write_ros(kind: str, seed: int, folder: Path) -> None:
    from tests.ingest import ros_logs

    messages = _ros_messages(seed)
    if kind == "ros2-mcap":
        ros_logs.write_ros2_mcap(messages, folder / f"e{seed:06d}.mcap")
    elif kind == "ros1-bag":
        ros_logs.write_ros1_bag(messages, folder / f"e{seed:06d}.bag")
    else:
        ros_logs.write_ros2_bag(messages, folder / f"e{seed:06d}")


def _write_robomimic(seed: int, folder: Path, demos: int = 50) -> None:
    import h5py

    with h5py.File(folder / f"demos{seed:06d}.hdf5", "w") as f:
        f.create_group("data").attrs["env_args"] = json.dumps({"env_name": "pick-place"})
        for n in range(demos):
            states, actions, _ = _arrays(seed * demos + n)
            f.create_dataset(f"data/demo_{n}/obs/robot_state", data=states)
            f.create_dataset(f"data/demo_{n}/actions", data=actions)
            f.create_dataset(f"data/demo_{n}/dones", data=np.r_[np.zeros(STEPS - 1), 1.0])


def _write_lerobot(seed: int, folder: Path, episodes: int = 100) -> None:
    from tests.ingest.datasets import write_lerobot

    rng = np.random.default_rng(seed)
    spans = [(STEPS, [int(rng.integers(0, STEPS))]) for _ in range(episodes)]
    write_lerobot(folder / f"set{seed:06d}", spans, state_dim=STATE_DIM, action_dim=ACTION_DIM)


def generate(kind: str, root: Path, size_mb: float) -> tuple[int, int]:
    """Write units of ``kind`` under root/part-K until the corpus reaches size_mb."""
    writer = {
        "mcap": _write_mcap,
        "robomimic": _write_robomimic,
        "lerobot": _write_lerobot,
    }.get(kind, lambda seed, folder: _write_ros(kind, seed, folder))
    target, seed, size, parts = size_mb * 2**20, 0, 0, [root / f"part-{k}" for k in range(PARTS)]
    for part in parts:
        part.mkdir(parents=True)
    while size < target:
        part = parts[min(int(size * PARTS / target), PARTS - 1)]
        before = set(part.iterdir())
        writer(seed, part)
        size += sum(_bytes(p) for p in set(part.iterdir()) - before)
        seed += 1
    return seed, size


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- measuring (each in a fresh process) --------------------------------------------------------


def raw_decode(kind: str, root: Path, loads=json.loads) -> int:
    """Decode everything with the format library alone; returns the number of episodes.

    ``loads`` decodes the JSON contract's messages: Python's json, as mcap's own examples do,
    or orjson, the decoder Flywheel's ingest uses."""
    if kind == "mcap":
        from mcap.reader import make_reader

        count = 0
        for path in sorted(root.rglob("*.mcap")):
            with open(path, "rb") as stream:
                for _, _, message in make_reader(stream).iter_messages(log_time_order=False):
                    loads(message.data)
            count += 1
        return count
    if kind == "ros2-mcap":
        from mcap_ros2.reader import read_ros2_messages

        paths = sorted(root.rglob("*.mcap"))
        for path in paths:
            for _ in read_ros2_messages(str(path), log_time_order=False):
                pass
        return len(paths)
    if kind in ("ros1-bag", "ros2-bag"):
        from rosbags.highlevel import AnyReader

        paths = sorted(root.rglob("*.bag")) or sorted(p.parent for p in root.rglob("metadata.yaml"))
        for path in paths:
            with AnyReader([path]) as reader:
                for connection, _, data in reader.messages():
                    reader.deserialize(data, connection.msgtype)
        return len(paths)
    if kind == "robomimic":
        return sum(1 for _ in _decoded_arrays(kind, root))
    import pyarrow.parquet as pq

    count = 0
    for path in sorted(root.rglob("data/chunk-*/*.parquet")):
        table = pq.read_table(path)
        table.column("observation.state").to_numpy()
        count += len(set(table.column("episode_index").to_pylist()))
    return count


# The formats whose library only copies arrays: for them the raw decode is far cheaper than
# anything that keeps the frames, and the store floor below says how much.
ARRAY_FORMATS = ("robomimic", "lerobot")


def _decoded_arrays(kind: str, root: Path):
    """(state, action) arrays per episode, decoded by the format library alone (for the JSON
    MCAP contract: mcap and orjson)."""
    if kind == "mcap":
        import orjson
        from mcap.reader import make_reader

        from services.ingest.formats.contract import STEP_TOPIC

        for path in sorted(root.rglob("*.mcap")):
            states, actions = [], []
            with open(path, "rb") as stream:
                for _, channel, message in make_reader(stream).iter_messages(log_time_order=False):
                    payload = orjson.loads(message.data)
                    if channel.topic == STEP_TOPIC:
                        states.append(payload["state"])
                        actions.append(payload["action"])
            yield np.array(states, dtype=np.float32), np.array(actions, dtype=np.float32)
        return
    if kind == "robomimic":
        import h5py

        for path in sorted(root.rglob("*.hdf5")):
            with h5py.File(path) as f:
                for name in f["data"]:
                    demo = f["data"][name]
                    demo["dones"][()]
                    yield demo["obs/robot_state"][()], demo["actions"][()]
        return
    import pyarrow.parquet as pq

    for path in sorted(root.rglob("data/chunk-*/*.parquet")):
        table = pq.read_table(path)
        owners = table.column("episode_index").to_numpy()
        states, actions = (_matrix(table.column(name)) for name in ("observation.state", "action"))
        for episode in np.unique(owners):
            rows = owners == episode
            yield states[rows], actions[rows]


def _matrix(column) -> np.ndarray:
    """A fixed-size-list or list column as a (rows, width) array, without a copy per row."""
    values = column.combine_chunks()
    flat = values.flatten().to_numpy()
    return flat.reshape(len(values), -1)


def store_floor(kind: str, root: Path) -> int:
    """The least that an ingest which keeps the frames must do, with libraries alone: the raw
    decode, a SHA-256 of every source byte (content ids), and the decoded frames written to
    Parquet as the episode store writes them (float32 vectors, no dictionary on floats), in
    files of CHUNK_FRAMES. No validation, no index, no metadata."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    from services.ingest.batch import CHUNK_FRAMES

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        with open(path, "rb") as stream:
            hashlib.file_digest(stream, "sha256")
    out = Path(tempfile.mkdtemp(prefix="floor-", dir=root.parent))
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    count = files = 0

    def flush() -> None:
        nonlocal pending, files, count
        if not pending:
            return
        states = np.concatenate([s for s, _ in pending]).astype(np.float32)
        actions = np.concatenate([a for _, a in pending]).astype(np.float32)
        lengths = [len(s) for s, _ in pending]
        table = pa.table(
            {
                "observation.state": pa.FixedSizeListArray.from_arrays(
                    states.reshape(-1), states.shape[1]
                ),
                "action": pa.FixedSizeListArray.from_arrays(actions.reshape(-1), actions.shape[1]),
                "episode_index": np.repeat(np.arange(len(pending)) + count, lengths),
                "frame_index": np.concatenate([np.arange(n) for n in lengths]),
            }
        )
        pq.write_table(table, out / f"file-{files:03d}.parquet", use_dictionary=["episode_index"])
        files += 1
        count += len(pending)
        pending = []

    try:
        frames = 0
        for states, actions in _decoded_arrays(kind, root):
            pending.append((states, actions))
            frames += len(states)
            if frames >= CHUNK_FRAMES:
                flush()
                frames = 0
        flush()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return count


def prepared_settings(home: Path):
    """A fresh FLYWHEEL_HOME with its store migrated (not part of what is timed)."""
    os.environ["FLYWHEEL_HOME"] = str(home)
    from services.config import Settings, configure_runtime
    from services.store import migrate

    settings = Settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    return settings


def ingest(source: Path, settings) -> int:
    from services.ingest.batch import ingest_logs

    summary = ingest_logs(settings, source=str(source))
    if summary.quarantined:
        raise SystemExit(f"benchmark logs quarantined: {summary.quarantined_files[:3]}")
    return summary.ingested


def _measure(args: list[str]) -> dict:
    """Run one measurement in a fresh process: seconds, episodes, peak RSS in MiB."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure", *args], capture_output=True, text=True, cwd=ROOT
    )
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# What each format's raw decode imports: imported before the clock starts, as Flywheel's are.
LIBRARIES = {
    "mcap": "mcap.reader",
    "ros2-mcap": "mcap_ros2.reader",
    "ros1-bag": "rosbags.highlevel",
    "ros2-bag": "rosbags.highlevel",
    "robomimic": "h5py",
    "lerobot": "pyarrow.parquet",
}


def _child(what: str, kind: str, source: str, home: str | None) -> None:
    importlib.import_module(LIBRARIES[kind])
    if what in ("ingest", "floor"):
        # Import cost (GX, SQLAlchemy, pyarrow) and migrations are paid once a night, not per log.
        importlib.import_module("pyarrow.parquet")
        importlib.import_module("services.ingest.batch")
    if what == "ingest":
        importlib.import_module("great_expectations")
        settings = prepared_settings(Path(home))
    started, cpu = time.perf_counter(), time.process_time()
    if what == "raw":
        episodes = raw_decode(kind, Path(source))
    elif what == "raw-orjson":
        episodes = raw_decode(kind, Path(source), importlib.import_module("orjson").loads)
    elif what == "floor":
        episodes = store_floor(kind, Path(source))
    else:
        episodes = ingest(Path(source), settings)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu": cpu, "episodes": episodes, "peak_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=500.0, help="corpus size per format")
    parser.add_argument("--quick", action="store_true", help="a 20 MB corpus per format")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--scratch", default=None, help="folder for the corpus (default: tmp)")
    parser.add_argument("--measure", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        what, kind, source, *home = args.measure
        return _child(what, kind, source, home[0] if home else None)
    size_mb = 20.0 if args.quick else args.size_mb
    kinds = [k for k in args.formats.split(",") if k]
    unknown = set(kinds) - set(FORMATS)
    if unknown:
        parser.error(f"unknown formats {sorted(unknown)}; known: {', '.join(FORMATS)}")
    scratch = Path(tempfile.mkdtemp(prefix="flywheel-bench-", dir=args.scratch))
    header = (
        f"{'format':<10} {'corpus':>9} {'episodes':>8} | {'raw MB/s':>8} {'ep/s':>7} | "
        f"{'ingest MB/s':>11} {'ep/s':>7} | {'ratio':>5} {'cpu':>5} | "
        f"{'floor MB/s':>10} {'ceil':>5} {'cpu':>5} | {'vs floor':>8} {'cpu':>5} | "
        "peak RSS MiB (1/4 -> all)"
    )
    print(f"corpus {size_mb:g} MB per format under {scratch}\n{header}\n{'-' * len(header)}")
    try:
        for kind in kinds:
            corpus = scratch / kind
            _, size = generate(kind, corpus, size_mb)
            mb = size / 2**20
            raw = _measure(["raw", kind, str(corpus)])
            quarter = _measure(["ingest", kind, str(corpus / "part-0"), str(scratch / "home-q")])
            full = _measure(["ingest", kind, str(corpus), str(scratch / "home")])
            ratio = raw["seconds"] / full["seconds"]
            # The same ratio in CPU seconds: on a shared machine the wall clock also measures
            # whoever else ran at the time.
            cpu_ratio = raw["cpu"] / full["cpu"]
            # The best ratio any ingest that stores the frames could reach: raw / store floor.
            floor_text = f"{'-':>10} {'-':>5} {'-':>5} | {'-':>8} {'-':>5}"
            if kind in ARRAY_FORMATS:
                floor = _measure(["floor", kind, str(corpus)])
                # Ingest against the floor: how close it comes to the least that storing costs.
                floor_text = (
                    f"{mb / floor['seconds']:>10.1f} {raw['seconds'] / floor['seconds']:>5.2f} "
                    f"{raw['cpu'] / floor['cpu']:>5.2f} | "
                    f"{floor['seconds'] / full['seconds']:>8.2f} {floor['cpu'] / full['cpu']:>5.2f}"
                )
            print(
                f"{kind:<10} {mb:>6.0f} MB {full['episodes']:>8} | "
                f"{mb / raw['seconds']:>8.1f} {raw['episodes'] / raw['seconds']:>7.1f} | "
                f"{mb / full['seconds']:>11.1f} {full['episodes'] / full['seconds']:>7.1f} | "
                f"{ratio:>5.2f} {cpu_ratio:>5.2f} | {floor_text} | "
                f"{quarter['peak_mib']:.0f} -> {full['peak_mib']:.0f}",
                flush=True,
            )
            if kind == "mcap":
                # Ingest decodes the JSON messages with orjson: the same ratio against a raw
                # decode that does too, so the decoder's speed-up is not counted as ingest's.
                # Its store floor (orjson into arrays, hashing, Parquet) gives the ceiling.
                fast = _measure(["raw-orjson", kind, str(corpus)])
                floor = _measure(["floor", kind, str(corpus)])
                print(
                    f"{'':<10} raw decode with orjson: {mb / fast['seconds']:.1f} MB/s, "
                    f"ratio {fast['seconds'] / full['seconds']:.2f} "
                    f"(cpu {fast['cpu'] / full['cpu']:.2f}); floor {mb / floor['seconds']:.1f} "
                    f"MB/s, ceiling {fast['seconds'] / floor['seconds']:.2f} "
                    f"(cpu {fast['cpu'] / floor['cpu']:.2f})",
                    flush=True,
                )
            for folder in (corpus, scratch / "home", scratch / "home-q"):
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
