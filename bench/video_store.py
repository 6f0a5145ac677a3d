"""What storing camera tracks costs the episode store, next to what making them cost.

Makes per-episode tracks of one camera (the core's ``episode_tracks``: raw RGB frames in,
one MP4 per episode out, in the store's video format), then times, side by side in one run:

- encode:  making the tracks (what a reader does for every episode; not the store's cost);
- pack:    ``EpisodeStore.write_batch`` packing them into one video file (remux, no
           re-encoding) with the image statistics, plus the data and episodes Parquet files;
- stats:   the part of pack spent decoding the sampled keyframes for the image statistics;
- drop:    ``drop_episodes`` of every other episode (the kept frames remuxed into a new file).

It prints ms per frame for each and the ratios encode/pack and encode/drop, and bytes per
stored frame against the raw RGB frame.

    .venv/bin/python bench/video_store.py [--episodes 20] [--steps 100] [--size 96]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.episode_store import videos  # noqa: E402
from services.episode_store.parquet import EpisodeStore  # noqa: E402
from services.episodes.cameras import (  # noqa: E402
    CameraSpec,
    CameraSpool,
    Payload,
    VideoFormat,
    episode_tracks,
)
from services.episodes.model import RawEpisode  # noqa: E402
from tests.ingest.logs import recording  # noqa: E402

HZ = 10.0


def _frames(seed: int, steps: int, size: int):
    """A moving gradient with noise: smooth enough to compress as camera images do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    for step in range(steps):
        base = (x + y + 3 * step + 40 * seed)[..., None] + np.array([0, 60, 120])
        noise = rng.integers(0, 12, size=(size, size, 3))
        yield ((base + noise) % 256).astype(np.uint8)


def _episode(seed: int, steps: int, size: int, folder: Path, fmt: VideoFormat) -> RawEpisode:
    base = recording(
        n=steps,
        robot_id=f"robot-{seed:02d}",
        control_hz=HZ,
        control_source=["policy"] * steps,
        reasons=[None] * steps,
        interventions=[],
    )
    ticks = np.arange(steps, dtype=np.int64) * int(1e9 / HZ)
    spool = CameraSpool(CameraSpec("front", "/camera/front"), folder)
    for tick, pixels in zip(ticks, _frames(seed, steps, size), strict=True):
        spool.add(int(tick), Payload("raw", pixels.tobytes(), size, size, "rgb8"))
    (track,) = episode_tracks(spool, [(ticks, HZ)], video_format=fmt, directory=folder)
    spool.close()
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    return RawEpisode(**fields, timestamps=np.arange(steps) / HZ, cameras={"front": track})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--codec", default=VideoFormat.codec)
    args = parser.parse_args()
    fmt = VideoFormat(codec=args.codec)
    frames = args.episodes * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        raws = [_episode(seed, args.steps, args.size, folder, fmt) for seed in range(args.episodes)]
        encode = time.perf_counter() - started

        sampling = 0.0
        real = videos._sample_stats

        def timed(*a, **k):
            nonlocal sampling
            begun = time.perf_counter()
            try:
                return real(*a, **k)
            finally:
                sampling += time.perf_counter() - begun

        videos._sample_stats = timed
        store = EpisodeStore(folder / "store")
        started = time.perf_counter()
        store.write_batch([(f"ep-{i}", i, raw) for i, raw in enumerate(raws)])
        store.write_meta()
        pack = time.perf_counter() - started
        videos._sample_stats = real
        (video,) = store.video_files()
        stored = (store.root / video).stat().st_size

        started = time.perf_counter()
        store.drop_episodes({f"ep-{i}" for i in range(0, args.episodes, 2)})
        drop = time.perf_counter() - started

    per = 1000 / frames
    print(
        f"{args.episodes} episodes x {args.steps} steps, {args.size}x{args.size} RGB, "
        f"{fmt.codec} gop {fmt.gop} crf {fmt.quality}"
    )
    print(f"encode tracks   {encode * per:8.3f} ms/frame")
    print(f"pack (store)    {pack * per:8.3f} ms/frame  (stats sampling {sampling * per:.3f})")
    print(f"drop half       {drop * per:8.3f} ms/frame of the file before")
    print(f"encode/pack     {encode / pack:8.1f}x   encode/drop {encode / drop:.1f}x")
    raw = args.size * args.size * 3
    print(
        f"stored bytes/frame {stored / frames:8.0f}  raw RGB {raw}  ({raw * frames / stored:.0f}x)"
    )


if __name__ == "__main__":
    main()
