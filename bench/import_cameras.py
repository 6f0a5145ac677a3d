"""Cameras of imported datasets (LeRobot videos, robomimic images) against their floors.

Writes a LeRobot v3.0 dataset and a robomimic file with two 64x64 cameras (the simulated
fleet's size), then times, side by side in one run:

- raw:    the dataset's library alone hands over every frame (PyAV decoding the LeRobot MP4
          files to RGB; h5py reading the robomimic image datasets);
- floor:  raw, then each episode's frames encoded into one MP4 per camera with the store's
          video format: the least an import that keeps per-episode tracks must do;
- import: ``read_lerobot`` / ``read_robomimic`` (decode, spool, align, judge, encode).

It prints frames/s (wall and CPU), the ratios raw/import and floor/import, and what the spool
costs per frame as raw RGB (what the readers spool) and as PNG (the cheaper-on-disk choice):
bytes, and the time to encode and decode it again, next to the import's time per frame.

    .venv/bin/python bench/import_cameras.py [--episodes 20] [--steps 50]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import av
import h5py
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.episodes.cameras import VideoFormat  # noqa: E402
from services.ingest.formats.lerobot import read_lerobot  # noqa: E402
from services.ingest.formats.robomimic import read_robomimic  # noqa: E402
from services.ingest.mapping import Robomimic  # noqa: E402
from tests.ingest.datasets import frame, write_lerobot, write_robomimic  # noqa: E402

CAMERAS = ("front", "wrist")
WHEN = datetime(2026, 3, 1, tzinfo=UTC)


def timed(work: Callable[[], int]) -> tuple[int, float, float]:
    """(frames, wall s, CPU s) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    frames = work()
    return frames, time.perf_counter() - wall, time.process_time() - cpu


def encode(frames: list[np.ndarray], path: Path, fps: int = 30) -> None:
    """One episode's frames into an MP4 with the store's video format."""
    fmt = VideoFormat()
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(fmt.codec, rate=fps, options=fmt.options())
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = fmt.pix_fmt
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def lerobot_raw(root: Path, steps: int, out: Path | None) -> int:
    count = 0
    for path in sorted(root.glob("videos/*/chunk-*/file-*.mp4")):
        with av.open(str(path)) as container:
            episode: list[np.ndarray] = []
            for decoded in container.decode(video=0):
                episode.append(decoded.to_ndarray(format="rgb24"))
                count += 1
                if len(episode) == steps:
                    if out is not None:
                        encode(episode, out / "floor.mp4")
                    episode = []
    return count


def robomimic_raw(path: Path, out: Path | None) -> int:
    count = 0
    with h5py.File(path) as f:
        for demo in f["data"].values():
            for key in ("agentview_image", "robot0_eye_in_hand_image"):
                frames = list(demo["obs"][key][()])
                count += len(frames)
                if out is not None:
                    encode(frames, out / "floor.mp4")
    return count


def imported(episodes) -> int:
    count = 0
    for _, episode in episodes:
        for track in episode.cameras.values():
            assert track.path is not None, track.facts
            count += episode.steps
            track.discard()
    return count


def line(name: str, figures: tuple[int, float, float]) -> str:
    frames, wall, cpu = figures
    return f"{name:<22} {frames:>7} {frames / wall:>10.0f} {frames / cpu:>10.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        spool = scratch / "spool"
        spool.mkdir()
        root = write_lerobot(
            scratch / "lerobot",
            [(args.steps, None)] * args.episodes,
            cameras=CAMERAS,
            per_video_file=10,
        )
        demos = write_robomimic(
            scratch / "demos.hdf5",
            lengths=[args.steps] * args.episodes,
            images=("agentview_image", "robot0_eye_in_hand_image"),
        )
        lerobot = {
            "raw (PyAV decode)": timed(lambda: lerobot_raw(root, args.steps, None)),
            "floor (decode+encode)": timed(lambda: lerobot_raw(root, args.steps, scratch)),
            "import (read_lerobot)": timed(
                lambda: imported(read_lerobot(root, {}, WHEN, directory=spool))
            ),
        }
        robomimic = {
            "raw (h5py read)": timed(lambda: robomimic_raw(demos, None)),
            "floor (read+encode)": timed(lambda: robomimic_raw(demos, scratch)),
            "import (read_robomimic)": timed(
                lambda: imported(read_robomimic(demos, Robomimic(), {}, WHEN, directory=spool))
            ),
        }
    print(f"{args.episodes} episodes x {args.steps} steps x {len(CAMERAS)} cameras, 64x64 RGB")
    print(f"{'':<22} {'frames':>7} {'frames/s':>10} {'per CPU s':>10}")
    for table in (lerobot, robomimic):
        for name, figures in table.items():
            print(line(name, figures))
        (_, raw_wall, raw_cpu), (_, floor_wall, floor_cpu), (n, wall, cpu) = table.values()
        print(
            f"  ratio raw/import {raw_wall / wall:.2f} (CPU {raw_cpu / cpu:.2f}), "
            f"floor/import {floor_wall / wall:.2f} (CPU {floor_cpu / cpu:.2f})"
        )
    _, wall, _ = lerobot["import (read_lerobot)"]
    n = lerobot["import (read_lerobot)"][0]
    smooth = frame(0, 0, 0)
    noisy = (smooth + np.random.default_rng(0).integers(-8, 9, smooth.shape)).clip(0, 255)
    print(
        f"spool per frame: raw RGB {smooth.nbytes} B, no work; the import takes "
        f"{wall / n * 1000:.2f} ms a frame; as PNG:"
    )
    for name, pixels in (("smooth test frame", smooth), ("with +-8 noise", noisy)):
        size, ms = png(pixels.astype(np.uint8))
        print(f"  {name:<18} {size:>6} B, {ms:.2f} ms to encode and decode again")


def png(pixels: np.ndarray, repeat: int = 200) -> tuple[int, float]:
    """(bytes, ms to encode and decode) of one frame as PNG."""
    start = time.perf_counter()
    for _ in range(repeat):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return len(buffer.getvalue()), (time.perf_counter() - start) / repeat * 1000


if __name__ == "__main__":
    main()
