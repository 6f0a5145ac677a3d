"""Training's camera loader against PyAV decoding the same sampled frames by itself.

A store of packed camera videos (Meta-World pick-place frames rendered by MuJoCo, as in
``bench/video_codec.py``, encoded with the store's default ``VideoFormat``) is sampled the
way training samples: minibatches of steps drawn uniformly at random over every step of every
episode. Each minibatch's frames are read twice, in turns:

- loader: ``locate`` (meta/episodes -> file and timestamp) and ``FrameReader.frames``;
- raw PyAV: for each sampled frame, its container (kept open) seeks to the frame's time and
  decodes forward to it; nothing else. Decoder and RGB conversion on one thread, as the
  loader's (a training worker is one thread);
- raw PyAV with FFmpeg's default threads, to show what one thread buys.

Both must give the same pixels. Printed: frames/s of each, their ratio (at least 0.8 is the
goal) and the loader's decode cost per sample (frames decoded, seeks).

    .venv/bin/python bench/camera_loader.py [--batches 40] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `python bench/camera_loader.py`

from bench.video_codec import KEY, render, write_store  # noqa: E402
from services.episode_store.frames import FrameReader, locate, video_path  # noqa: E402
from services.episodes.cameras import VideoFormat  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "camera_loader.json"


class RawPyAV:
    """The floor: PyAV alone, one container per file kept open, one seek per frame."""

    def __init__(self, root: Path, threads: int | None = 1) -> None:
        self.root = root
        # 1: one thread, as the loader; None: FFmpeg's defaults (threads per core).
        self.threads = threads
        self.open: dict[str, tuple[av.container.InputContainer, av.video.VideoStream]] = {}

    def frames(self, key: str, requests) -> np.ndarray:
        out = []
        for file, timestamp in requests:
            relative = video_path(key, file)
            if relative not in self.open:
                container = av.open(str(self.root / relative))
                stream = container.streams.video[0]
                if self.threads:
                    stream.codec_context.thread_count = self.threads
                self.open[relative] = container, stream
            container, stream = self.open[relative]
            pts = round(timestamp / stream.time_base)
            container.seek(pts, stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts >= pts:
                    out.append(frame.to_ndarray(format="rgb24", threads=self.threads))
                    break
        return np.stack(out)

    def close(self) -> None:
        for container, _ in self.open.values():
            container.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rendered", type=int, default=4, help="episodes rendered")
    parser.add_argument("--episodes", type=int, default=24, help="episodes in the store")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--per-file", type=int, default=8, help="episodes packed per file")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    video_format = VideoFormat()

    rendered, _, fps = render(args.rendered, args.steps, args.size)
    # The store's episodes reuse the rendered ones in turn: decoding cost depends on the
    # pictures' kind, not on their being new.
    frames = [rendered[e % len(rendered)] for e in range(args.episodes)]
    root = Path(tempfile.mkdtemp(prefix="flywheel-loader-"))
    try:
        table, _ = write_store(root, frames, video_format, fps, args.per_file)
        rng = np.random.default_rng(0)
        lengths = np.array([len(f) for f in frames])
        firsts = np.r_[0, np.cumsum(lengths)[:-1]]
        batches = []
        for _ in range(args.batches):
            step = rng.integers(0, lengths.sum(), args.batch)
            episode = np.searchsorted(firsts, step, side="right") - 1
            batches.append((episode, step - firsts[episode]))

        loader = FrameReader(root)
        sides = {
            "loader": loader,
            "raw": RawPyAV(root),
            "raw, FFmpeg's threads": RawPyAV(root, None),
        }
        # Open every file once on every side (the loader reads each file's index then).
        everything = locate(table, KEY, np.arange(args.episodes), np.zeros(args.episodes), fps)
        for side in sides.values():
            side.frames(KEY, everything)
        loader.decoded = loader.seeks = 0
        seconds = dict.fromkeys(sides, 0.0)
        for episode, frame in batches:
            # In turns, so that every side sees the same load on a shared machine.
            pixels = []
            for name, side in sides.items():
                started = time.perf_counter()
                pixels.append(side.frames(KEY, locate(table, KEY, episode, frame, fps)))
                seconds[name] += time.perf_counter() - started
            if not all(np.array_equal(pixels[0], p) for p in pixels[1:]):
                raise SystemExit("the loader and raw PyAV decoded different pixels")
        for side in sides.values():
            side.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    samples = args.batches * args.batch
    rates = {side: samples / s for side, s in seconds.items()}
    ratio = rates["loader"] / rates["raw"]
    print(
        f"store: {args.episodes} episodes x {args.steps} steps, {args.size}x{args.size} px, "
        f"{args.per_file} per file, {video_format.codec} gop {video_format.gop} crf "
        f"{video_format.quality}; {args.batches} minibatches of {args.batch} random steps"
    )
    print(f"{'':22} {'frames/s':>9} {'ms/frame':>9}")
    for side, rate in rates.items():
        print(f"{side:22} {rate:9.0f} {1e3 / rate:9.2f}")
    print(f"ratio loader/raw PyAV: {ratio:.2f} (goal: at least 0.8); same pixels: yes")
    print(
        f"loader decode cost per sample: {loader.decoded / samples:.2f} frames decoded, "
        f"{loader.seeks / samples:.2f} seeks"
    )
    RESULTS.write_text(
        json.dumps(
            {
                "config": {**vars(args), "fps": fps, "video_format": vars(video_format)},
                "frames_per_s": rates,
                "ratio": ratio,
                "frames_decoded_per_sample": loader.decoded / samples,
                "seeks_per_sample": loader.seeks / samples,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
