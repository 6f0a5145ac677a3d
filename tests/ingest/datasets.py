"""Demonstration datasets for the tests: robomimic-layout HDF5 and LeRobot v3.0 folders."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_robomimic(
    path: Path, lengths=(12, 9), *, broken: dict | None = None, state=(3, 2), action_dim=7
) -> Path:
    """A robomimic-layout file: state values from two obs keys (sizes ``state``), actions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {}})
        for n, length in enumerate(lengths):
            rng = np.random.default_rng(n)  # the same demo whenever the file is written
            demo = data.create_group(f"demo_{n}")
            demo.create_dataset("obs/robot0_eef_pos", data=rng.normal(size=(length, state[0])))
            demo.create_dataset("obs/robot0_gripper_qpos", data=rng.normal(size=(length, state[1])))
            demo.create_dataset("obs/agentview_image", data=np.zeros((length, 4, 4, 3), np.uint8))
            demo.create_dataset("actions", data=rng.uniform(-1, 1, size=(length, action_dim)))
            dones = np.zeros(length)
            dones[-1] = n == 0  # the first demo ends by finishing the task
            demo.create_dataset("dones", data=dones)
        for name, change in (broken or {}).items():
            change(data.require_group(name))
    return path


def write_lerobot(
    root: Path, episodes=((10, None), (7, [3, 4])), state_dim: int = 6, action_dim: int = 6
) -> Path:
    """A LeRobot v3.0 dataset as LeRobot writes it (tasks as the pandas index), with an
    ``intervention`` column: episode n has length and the steps an operator intervened."""
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
        },
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    return root
