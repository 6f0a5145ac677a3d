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

Image observations, (T, H, W, 3) uint8 such as ``agentview_image``, are cameras: the mapping's
``robomimic.image_keys`` (default: every obs key ending in ``_image`` with four dimensions),
each named without its ``_image`` (``observation.images.agentview``), one frame per step.
They are read a block of steps at a time, never a whole demo, into a ``CameraTrack``
(``tracks.py``). The frames are kept as stored: robosuite renders some versions' images
upside down, and the dataset, not the importer, says which way up they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from services.episodes.cameras import CameraSpec, CameraTrack, VideoFormat
from services.episodes.model import LogFormatError, RawEpisode
from services.features import CONTROL_OPERATOR
from services.ingest.formats.tracks import camera_error, discard, track
from services.ingest.mapping import Robomimic, robomimic_camera

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Steps of an image observation read at once: a few MB of 84x84 to 256x256 frames.
IMAGE_BLOCK = 32


def read_robomimic(
    path: Path,
    config: Robomimic,
    defaults: Mapping[str, Any],
    recorded_at: datetime,
    directory: str | Path | None = None,
    video_format: VideoFormat | None = None,
) -> Iterator[tuple[str, RawEpisode | LogFormatError]]:
    """(demo name, episode or why it cannot be one) per demo; raises for a bad file.

    Camera tracks are written under ``directory`` (default: the system's temporary folder) in
    ``video_format`` (default: ``VideoFormat()``).
    """
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
                output = (directory, video_format)
                yield name, _demo(data[name], name, config, defaults, task, recorded_at, output)
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


def _demo(group, name, config: Robomimic, defaults, task, recorded_at, output) -> RawEpisode:
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
    episode = RawEpisode(
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
    episode.cameras = _tracks(datasets, name, config, n, output)
    return episode


def _tracks(datasets, name: str, config: Robomimic, n: int, output) -> dict[str, CameraTrack]:
    """The demo's camera tracks; on an error, none are left on disk."""
    if config.image_keys is None:
        keys = sorted(
            k for k, d in datasets.items() if k.endswith("_image") and getattr(d, "ndim", 0) == 4
        )
    else:
        keys = list(config.image_keys)
    ticks = np.round(np.arange(n) * (1e9 / config.control_hz)).astype(np.int64)
    tracks: dict[str, CameraTrack] = {}
    try:
        for key in keys:
            camera = robomimic_camera(key)
            frames = _frames(datasets.get(key), key, name, camera, ticks)
            spec = CameraSpec(camera, f"/obs/{key}")
            tracks[camera] = track(spec, frames, ticks, config.control_hz, *output)
    except BaseException:
        discard(tracks)
        raise
    return tracks


def _frames(dataset, key: str, name: str, camera: str, ticks: np.ndarray):
    """(step time in ns, RGB frame) per step, read IMAGE_BLOCK steps at a time."""
    import h5py

    if not isinstance(dataset, h5py.Dataset):
        raise camera_error(name, camera, f"obs has no {key}")
    shape, dtype = dataset.shape, dataset.dtype
    if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8:
        raise camera_error(
            name, camera, f"obs {key} is {shape} {dtype}, not (T, H, W, 3) uint8 frames"
        )
    if shape[0] != len(ticks):
        raise camera_error(name, camera, f"obs {key} has {shape[0]} frames for {len(ticks)} steps")
    for first in range(0, len(ticks), IMAGE_BLOCK):
        try:
            block = dataset[first : first + IMAGE_BLOCK]
        except (OSError, ValueError) as exc:
            raise camera_error(name, camera, f"obs {key} is unreadable ({exc})") from exc
        yield from zip(ticks[first : first + IMAGE_BLOCK].tolist(), block, strict=True)
