"""Import robomimic-layout HDF5 files as demonstrations.

```
data/                    attrs: env_args (JSON; its env_name is the task), total
data/demo_N/obs/<key>    (T, ...) per-step observations; 1-D-per-step keys become state
data/demo_N/actions      (T, action_dim)
data/demo_N/dones        (T,) 1 where the demo ended by finishing the task
```

Each ``demo_N`` is one episode of kind ``demo``, the operator in control throughout, in demo
number order. ``observation.state`` concatenates the mapping's ``robomimic.obs_keys`` (or every
key with one vector per step, by name; images are left out). The file has no clock: step times
are the step number over the control rate (``robomimic.control_hz``, robosuite's 20 Hz by
default). The outcome is ``success`` when the last ``dones`` is set, else ``unknown``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from services.episodes.model import LogFormatError, RawEpisode
from services.features import CONTROL_OPERATOR
from services.ingest.mapping import Robomimic

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def read_robomimic(
    path: Path, config: Robomimic, defaults: Mapping[str, Any], recorded_at: datetime
) -> Iterator[tuple[str, RawEpisode | LogFormatError]]:
    """(demo name, episode or why it cannot be one) per demo; raises for a bad file."""
    import h5py

    with open(path, "rb") as stream:
        magic = stream.read(len(HDF5_MAGIC))
    if not magic:
        raise LogFormatError("empty file")
    if magic != HDF5_MAGIC:
        raise LogFormatError("not an HDF5 file (bad magic bytes)")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise LogFormatError(f"truncated or corrupt HDF5 ({exc})") from exc
    with handle:
        data = handle.get("data")
        if not isinstance(data, h5py.Group):
            raise LogFormatError("no data group: not a robomimic-layout file")
        demos = sorted((k for k in data if k.startswith("demo_")), key=_number)
        if not demos:
            raise LogFormatError("zero-length file: no data/demo_N groups")
        task = defaults.get("task") or _env_name(data) or Path(path).stem
        for name in demos:
            try:
                yield name, _demo(data[name], name, config, defaults, task, recorded_at)
            except LogFormatError as exc:
                yield name, exc
            except (OSError, KeyError, ValueError) as exc:  # a damaged dataset inside the file
                yield name, LogFormatError(f"{name}: unreadable ({exc})")


def _number(name: str) -> tuple[int, str]:
    match = re.fullmatch(r"demo_(\d+)", name)
    return (int(match.group(1)), name) if match else (1 << 62, name)


def _env_name(data) -> str | None:
    try:
        return json.loads(data.attrs["env_args"]).get("env_name")
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _demo(group, name, config: Robomimic, defaults, task: str, recorded_at) -> RawEpisode:
    import h5py

    # Each dataset is looked up once: h5py's lookups, not the reads, are most of the cost.
    members = dict(group.items())
    if "actions" not in members:
        raise LogFormatError(f"{name}: no actions")
    actions = np.asarray(members["actions"][()], dtype=np.float32)
    if actions.ndim == 1:
        actions = actions[:, None]
    obs = members.get("obs")
    if not isinstance(obs, h5py.Group):
        raise LogFormatError(f"{name}: no obs group")
    datasets = dict(obs.items())
    keys = list(config.obs_keys) or sorted(k for k, d in datasets.items() if d.ndim <= 2)
    missing = [k for k in keys if k not in datasets]
    if missing or not keys:
        raise LogFormatError(f"{name}: obs has no {', '.join(missing) or 'low-dimensional keys'}")
    parts = [np.asarray(datasets[k][()], dtype=np.float32) for k in keys]
    parts = [p.reshape(len(p), -1) for p in parts]
    n = len(actions)
    if n == 0:
        raise LogFormatError(f"zero-length episode: {name} has no steps")
    wrong = [k for k, p in zip(keys, parts, strict=True) if len(p) != n]
    if wrong:
        raise LogFormatError(f"{name}: obs {', '.join(wrong)} and actions differ in length")
    dones = np.asarray(members["dones"][()]) if "dones" in members else np.zeros(0)
    outcome = "success" if len(dones) and bool(dones[-1]) else "unknown"
    return RawEpisode(
        episode_uuid="",
        robot_id=str(defaults.get("robot_id") or "robomimic"),
        task=str(task),
        policy_version=None,
        kind="demo",
        operator_id=defaults.get("operator_id"),
        started_at=recorded_at,
        control_hz=config.control_hz,
        states=parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1),
        actions=actions,
        timestamps=np.arange(n) / config.control_hz,
        control_source=[CONTROL_OPERATOR] * n,
        reasons=[None] * n,
        outcome=outcome,
    )
