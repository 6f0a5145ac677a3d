"""Which codec, keyframe interval and quality the store should encode camera tracks with.

Frames: Meta-World pick-place rendered by MuJoCo on the CPU (EGL; shadows, reflections,
skybox and multisampling off), the ``corner`` camera, the scripted expert with noise on its
actions so that episodes differ. Every candidate ``VideoFormat`` encodes the same episodes
the way ingest does (one track per episode, then packed several to a file as the store
does), and the figures are printed side by side:

- bytes per frame, and the raw frame's size over it;
- encode time per frame (one track per episode, as ingest encodes);
- decode time of one randomly sampled step, read through ``FrameReader`` as training reads
  it, and the frames decoded per sample (the keyframe interval's cost);
- PSNR of the decoded frames against the raw ones;
- a policy's validation loss on decoded frames against raw frames: a small conv net trained
  on raw frames to predict the robot hand's position (state[0:3]), evaluated on held-out
  episodes, raw and decoded by each candidate.

    .venv/bin/python bench/video_codec.py [--episodes 8] [--steps 50] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo loads: render without a display

import av
import numpy as np
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: `python bench/video_codec.py`

from services.episode_store.frames import FrameReader, locate, video_path  # noqa: E402
from services.episode_store.videos import pack  # noqa: E402
from services.episodes.cameras import VideoFormat  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "video_codec.json"
KEY = "observation.images.corner"
CANDIDATES = (
    VideoFormat("libsvtav1", gop=2, crf=30),  # LeRobot's default
    VideoFormat("libsvtav1", gop=2, crf=40),
    VideoFormat("libsvtav1", gop=10, crf=30),
    VideoFormat("libx264", gop=2, crf=18),
    VideoFormat("libx264", gop=2, crf=23),
    VideoFormat("libx264", gop=2, crf=30),
    VideoFormat("libx264", gop=10, crf=23),
)
# The policy predicts these state coordinates from the frame: the hand's xyz (it moves in
# every episode; the object's place differs per episode, too few to learn from here).
LABELS = [0, 1, 2]


def render(
    episodes: int, steps: int, size: int
) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Frames (steps, size, size, 3) and state labels of ``episodes`` pick-place episodes,
    and the control rate (Hz)."""
    import mujoco

    from services.twin.tasks import make_env

    env = make_env("pick-place")
    model, data = env._env.model, env._env.data
    model.vis.quality.offsamples = 0
    renderer = mujoco.Renderer(model, size, size)
    for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX"):
        renderer.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
    rng = np.random.default_rng(0)
    frames, labels = [], []
    for seed in range(episodes):
        state = env.reset(seed)
        pictures, states = [], []
        for _ in range(steps):
            renderer.update_scene(data, camera="corner")
            # MuJoCo renders bottom row first.
            pictures.append(renderer.render()[::-1].copy())
            states.append(state[LABELS])
            noise = rng.normal(0, 0.5, 4).astype(np.float32)
            state = env.step(env.expert_action(state) + noise).state
        frames.append(np.stack(pictures))
        labels.append(np.stack(states))
    renderer.close()
    return frames, labels, env.control_hz


def encode(path: Path, pictures: np.ndarray, video_format: VideoFormat, fps: float) -> None:
    """One episode's track, encoded as ingest encodes it (services/episodes/cameras.py)."""
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(video_format.codec, rate=rate, options=video_format.options())
        stream.height, stream.width = pictures.shape[1:3]
        stream.pix_fmt = video_format.pix_fmt
        stream.time_base = 1 / rate
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_store(
    root: Path,
    frames: list[np.ndarray],
    video_format: VideoFormat,
    fps: float,
    per_file: int,
    key: str = KEY,
) -> tuple[pa.Table, float]:
    """Camera ``key`` of a store: episodes encoded one track each, packed ``per_file`` to a
    file; meta/episodes' video columns and the encoding's seconds."""
    rows = {"chunk": [], "file": [], "from": []}
    encoding = 0.0
    for first in range(0, len(frames), per_file):
        file = (0, first // per_file)
        tracks = []
        for e in range(first, min(first + per_file, len(frames))):
            tracks.append(root / f".track-{e}.mp4")
            started = time.perf_counter()
            encode(tracks[-1], frames[e], video_format, fps)
            encoding += time.perf_counter() - started
        path = root / video_path(key, file)
        path.parent.mkdir(parents=True, exist_ok=True)
        spans, _ = pack(tracks, Fraction(fps).limit_denominator(1001), path)
        rows["from"] += [span.from_timestamp for span in spans]
        rows["chunk"] += [file[0]] * len(tracks)
        rows["file"] += [file[1]] * len(tracks)
        for track in tracks:
            track.unlink()
    table = pa.table(
        {
            "episode_index": np.arange(len(frames)),
            f"videos/{key}/chunk_index": rows["chunk"],
            f"videos/{key}/file_index": rows["file"],
            f"videos/{key}/from_timestamp": rows["from"],
        }
    )
    return table, encoding


class Encoder(torch.nn.Module):
    """A small conv encoder and head, the shape of a visuomotor policy's image path."""

    def __init__(self, size: int, outputs: int) -> None:
        super().__init__()
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 5, stride=2, padding=2),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(32, 32, 3, stride=2, padding=1),
            torch.nn.ReLU(),
        )
        side = -(-size // 8)
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(32 * side * side, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, outputs),
        )  # fmt: skip

    def forward(self, pictures: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(pictures.permute(0, 3, 1, 2).float() / 255.0))


def train(pictures: np.ndarray, targets: np.ndarray, steps: int, size: int) -> Encoder:
    torch.manual_seed(0)
    model = Encoder(size, targets.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(pictures), torch.from_numpy(targets)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (32,), generator=generator)
        loss = torch.nn.functional.mse_loss(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model


@torch.no_grad()
def loss(model: Encoder, pictures: np.ndarray, targets: np.ndarray) -> float:
    predicted = torch.cat([model(torch.from_numpy(p)) for p in np.array_split(pictures, 8)])
    return float(torch.nn.functional.mse_loss(predicted, torch.from_numpy(targets)))


def psnr(decoded: np.ndarray, raw: np.ndarray) -> float:
    mse = float(np.mean((decoded.astype(np.float32) - raw.astype(np.float32)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def sampled_decode(root: Path, table: pa.Table, lengths: list[int], fps: float, samples: int):
    """Seconds per randomly sampled step and frames decoded per sample, one step per read
    (training's worst case: no two samples of a batch in one group of pictures)."""
    rng = np.random.default_rng(1)
    episode = rng.integers(0, len(lengths), samples)
    frame = rng.integers(0, np.asarray(lengths)[episode])
    requests = locate(table, KEY, episode, frame, fps)
    with FrameReader(root) as reader:
        reader.frames(KEY, requests[:1])  # open the files (their index is read once)
        reader.decoded = 0
        started = time.perf_counter()
        for request in requests:
            reader.frames(KEY, [request])
        seconds = time.perf_counter() - started
        return seconds / samples, reader.decoded / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="steps (frames) per episode")
    parser.add_argument("--size", type=int, default=64, help="frame height and width (px)")
    parser.add_argument("--per-file", type=int, default=4, help="episodes packed per file")
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--samples", type=int, default=1000, help="sampled steps to decode")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared; a second thread buys little here

    started = time.perf_counter()
    frames, labels, fps = render(args.episodes, args.steps, args.size)
    render_s = time.perf_counter() - started
    n_frames = args.episodes * args.steps
    held_out = max(1, args.episodes // 4)
    train_x, val_x = np.concatenate(frames[:-held_out]), np.concatenate(frames[-held_out:])
    raw_y = np.concatenate(labels)
    mean, std = raw_y.mean(0), raw_y.std(0) + 1e-6
    ys = [((y - mean) / std).astype(np.float32) for y in labels]
    train_y, val_y = np.concatenate(ys[:-held_out]), np.concatenate(ys[-held_out:])
    started = time.perf_counter()
    model = train(train_x, train_y, args.train_steps, args.size)
    train_s = time.perf_counter() - started
    raw_loss = loss(model, val_x, val_y)
    raw_bytes = args.size * args.size * 3

    lengths = [len(f) for f in frames]
    val_episodes = np.repeat(np.arange(args.episodes - held_out, args.episodes), args.steps)
    val_frames = np.tile(np.arange(args.steps), held_out)
    rows = []
    for video_format in CANDIDATES:
        root = Path(tempfile.mkdtemp(prefix="flywheel-codec-"))
        try:
            table, encode_s = write_store(root, frames, video_format, fps, args.per_file)
            stored = sum(p.stat().st_size for p in (root / "videos").rglob("*.mp4"))
            with FrameReader(root) as reader:
                decoded = reader.frames(KEY, locate(table, KEY, val_episodes, val_frames, fps))
            decode_s, per_sample = sampled_decode(root, table, lengths, fps, args.samples)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        decoded_loss = loss(model, decoded, val_y)
        rows.append(
            {
                "codec": video_format.codec,
                "gop": video_format.gop,
                "crf": video_format.quality,
                "bytes_per_frame": stored / n_frames,
                "raw_over_stored": raw_bytes * n_frames / stored,
                "encode_ms_per_frame": 1e3 * encode_s / n_frames,
                "decode_ms_per_sample": 1e3 * decode_s,
                "frames_decoded_per_sample": per_sample,
                "psnr_db": psnr(decoded, val_x),
                "val_loss": decoded_loss,
                "val_loss_over_raw": decoded_loss / raw_loss,
            }
        )

    print(
        f"frames: Meta-World pick-place, MuJoCo on the CPU (EGL), camera 'corner', "
        f"{args.size}x{args.size}, {args.episodes} episodes x {args.steps} steps at {fps:g} Hz, "
        f"rendered in {render_s:.1f} s ({n_frames / render_s:.0f} frames/s); "
        f"{args.per_file} episodes per file; raw {raw_bytes} bytes per frame"
    )
    print(
        f"policy: conv encoder + head predicting the hand's xyz, {args.train_steps} steps "
        f"on {len(train_x)} raw frames ({train_s:.1f} s); validation loss on {len(val_x)} "
        f"held-out raw frames: {raw_loss:.4f} (MSE, standardised)"
    )
    header = (
        f"{'codec':10} {'gop':>3} {'crf':>3} {'B/frame':>8} {'raw/x':>6} {'enc ms/f':>8} "
        f"{'dec ms/sample':>13} {'frames/sample':>13} {'PSNR dB':>7} {'val loss':>8} "
        f"{'vs raw':>6}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['codec']:10} {r['gop']:3d} {r['crf']:3d} {r['bytes_per_frame']:8.0f} "
            f"{r['raw_over_stored']:6.1f} {r['encode_ms_per_frame']:8.2f} "
            f"{r['decode_ms_per_sample']:13.2f} {r['frames_decoded_per_sample']:13.2f} "
            f"{r['psnr_db']:7.1f} {r['val_loss']:8.4f} {r['val_loss_over_raw']:6.2f}"
        )
    config = {**vars(args), "fps": fps, "render_s": render_s, "raw_val_loss": raw_loss}
    RESULTS.write_text(json.dumps({"config": config, "rows": rows}, indent=2) + "\n")
    print(f"written: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
