"""Demonstration datasets for the tests: robomimic-layout HDF5 and LeRobot v3.0 folders."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_robomimic(
    path: Path,
    lengths=(12, 9),
    *,
    broken: dict | None = None,
    state=(3, 2),
    action_dim=7,
    images: tuple[str, ...] = (),
) -> Path:
    """A robomimic-layout file: state values from two obs keys (sizes ``state``), actions, and
    the image observations ``images`` (``frame`` per step, 64x64)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {}})
        for n, length in enumerate(lengths):
            rng = np.random.default_rng(n)  # the same demo whenever the file is written
            demo = data.create_group(f"demo_{n}")
            demo.create_dataset("obs/robot0_eef_pos", data=rng.normal(size=(length, state[0])))
            demo.create_dataset("obs/robot0_gripper_qpos", data=rng.normal(size=(length, state[1])))
            for c, key in enumerate(images):
                pixels = np.stack([frame(c, n, i) for i in range(length)])
                demo.create_dataset(f"obs/{key}", data=pixels, chunks=(4, 64, 64, 3))
            demo.create_dataset("actions", data=rng.uniform(-1, 1, size=(length, action_dim)))
            dones = np.zeros(length)
            dones[-1] = n == 0  # the first demo ends by finishing the task
            demo.create_dataset("dones", data=dones)
        for name, change in (broken or {}).items():
            change(data.require_group(name))
    return path


def frame(camera: int, episode: int, step: int, size: int = 64) -> np.ndarray:
    """A test camera's frame: a smooth gradient (a codec keeps it) that each step shifts, so
    every step's frame is told apart from its neighbours after lossy encoding."""
    y, x = np.mgrid[0:size, 0:size]
    base = (x * 64 // size + y * 32 // size)[..., None] + np.array([0, 30, 60])
    pixels = base + 10 * step + 20 * episode
    return (pixels if camera == 0 else 255 - pixels).clip(0, 255).astype(np.uint8)


def write_lerobot(
    root: Path,
    episodes=((10, None), (7, [3, 4])),
    state_dim: int = 6,
    action_dim: int = 6,
    *,
    cameras: tuple[str, ...] = (),
    per_video_file: int = 2,
    short: int = 0,
) -> Path:
    """A LeRobot v3.0 dataset as LeRobot writes it (tasks as the pandas index), with an
    ``intervention`` column: episode n has length and the steps an operator intervened.

    ``cameras`` are written as videos (``frame`` per step, AV1 as LeRobot encodes them),
    ``per_video_file`` episodes packed in each file; ``short`` frames are left off the end of
    the last file of the first camera."""
    rng = np.random.default_rng(0)
    columns: dict[str, list] = {k: [] for k in ("episode_index", "frame_index", "timestamp")}
    columns |= {"observation.state": [], "action": [], "task_index": [], "intervention": []}
    columns["index"] = []
    metas = []
    for e, (length, intervened) in enumerate(episodes):
        start = len(columns["index"])
        for i in range(length):
            columns["episode_index"].append(e)
            columns["frame_index"].append(i)
            columns["timestamp"].append(i / 30)
            columns["observation.state"].append(rng.normal(size=state_dim).astype(np.float32))
            columns["action"].append(rng.normal(size=action_dim).astype(np.float32))
            columns["task_index"].append(e % 2)
            columns["intervention"].append(bool(intervened and i in intervened))
            columns["index"].append(start + i)
        metas.append(
            {
                "episode_index": e,
                "tasks": [["fold towel", "open drawer"][e % 2]],
                "length": length,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": start,
                "dataset_to_index": start + length,
            }
        )
    video = {}
    for c, camera in enumerate(cameras):
        key = f"observation.images.{camera}"
        video[key] = {"dtype": "video", "shape": [64, 64, 3], "info": {"video.fps": 30}}
        lengths = [length for length, _ in episodes]
        for first in range(0, len(lengths), per_video_file):
            file_index = first // per_video_file
            frames, offset = [], 0
            for e in range(first, min(first + per_video_file, len(lengths))):
                metas[e] |= {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": file_index,
                    f"videos/{key}/from_timestamp": offset / 30,
                    f"videos/{key}/to_timestamp": (offset + lengths[e]) / 30,
                }
                frames += [frame(c, e, i) for i in range(lengths[e])]
                offset += lengths[e]
            if c == 0 and first + per_video_file >= len(lengths) and short:
                frames = frames[:-short]
            path = root / f"videos/{key}/chunk-000/file-{file_index:03d}.mp4"
            write_video(path, frames, 30)
    (root / "data/chunk-000").mkdir(parents=True)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    sizes = {"observation.state": state_dim, "action": action_dim}
    table = pa.table(
        {
            k: pa.array(v, type=pa.list_(pa.float32(), sizes[k])) if k in sizes else v
            for k, v in columns.items()
        }
    )
    pq.write_table(table, root / "data/chunk-000/file-000.parquet")
    pq.write_table(pa.Table.from_pylist(metas), root / "meta/episodes/chunk-000/file-000.parquet")
    tasks = pa.table({"task_index": [0, 1], "__index_level_0__": ["fold towel", "open drawer"]})
    pq.write_table(tasks, root / "meta/tasks.parquet")
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so100",
        "fps": 30,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "features": {
            "observation.state": {"dtype": "float32", "shape": [state_dim]},
            "action": {"dtype": "float32", "shape": [action_dim]},
        }
        | video,
    }
    if video:
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    (root / "meta/info.json").write_text(json.dumps(info))
    return root


def write_video(path: Path, frames: list[np.ndarray], fps: int, skip=()) -> None:
    """An MP4 as LeRobot encodes one (AV1, a keyframe every 2 frames, CRF 30); the frames
    numbered in ``skip`` are left out, the others keep their times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libsvtav1", rate=fps, options={"g": "2", "crf": "30"})
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for n, pixels in enumerate(frames):
            if n in skip:
                continue
            picture = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            picture.pts = n
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def assert_frames(track, camera: int, episode: int, steps: int) -> None:
    """A camera track holds ``frame(camera, episode, step)`` for each step, within what lossy
    encoding changes: each decoded frame is close to its own step's and closer to it than to
    any other step's."""
    with av.open(str(track.path)) as container:
        decoded = [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]
    assert len(decoded) == steps
    sources = [frame(camera, episode, i).astype(np.int16) for i in range(steps)]
    for i, pixels in enumerate(decoded):
        errors = [float(np.abs(pixels - source).mean()) for source in sources]
        assert errors[i] < 6 and int(np.argmin(errors)) == i, (i, errors)
