"""Camera ingest against the raw decode of the same images and against a store floor; bytes
stored per frame; peak memory from a quarter of the corpus to all of it (issue 19).

    .venv/bin/python bench/camera_ingest.py [--logs 8] [--episodes 3] [--episode-s 10]
                                            [--size 96] [--quick]

The corpus: ROS 2 MCAP logs (uncompressed chunks, as ``ros2 bag record -s mcap`` writes by
default), each with a few episodes of joint states at 30 Hz, actions at 10 Hz (the control
rate) and an outcome, and three 30 Hz cameras: ``front`` and ``wrist`` as JPEG
``sensor_msgs/msg/CompressedImage``, ``top`` as H.264 ``foxglove_msgs/msg/CompressedVideo``
(one access unit per message, a keyframe every second). Every log and episode has its own
pictures (a moving square on a gradient, with sensor noise), so none is a duplicate. The logs
are written in four folders; the quarter run ingests the first.

Each measurement runs in a fresh process, side by side in one run:

- raw:    the same camera payloads decoded by the libraries alone (Pillow for JPEG, PyAV for
          H.264), read from the logs into memory first (not timed): frames/s;
- floor:  the least a store of these frames must do, with the same payloads in memory: decode
          every frame (as raw), encode one MP4 per camera per episode with the store's video
          format (``Settings().video``), one frame per control step (the latest frame at or
          before the step, as ingest aligns them), written to disk;
- ingest: ``services.ingest.batch.ingest_logs`` on a fresh FLYWHEEL_HOME with the cameras
          mapped (read, decode, align, validate, encode, pack into the store's videos/, write
          Parquet, index), on a quarter of the corpus and on all of it.

It prints camera frames/s for each (frames logged, per second of wall time; CPU seconds
beside), the ratios ingest/raw and ingest/floor, bytes stored per frame (videos/ over the
frames the store holds: one per step and camera) against raw RGB and against the log's own
compressed bytes, and peak RSS (ru_maxrss of each child) for the quarter and the whole corpus.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONTROL_HZ, STATE_HZ, CAMERA_HZ = 10, 30, 30
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
PARTS = 4
# camera name -> (topic, what it logs)
CAMERAS = {
    "front": ("/camera/front/compressed", "jpeg"),
    "wrist": ("/camera/wrist/compressed", "jpeg"),
    "top": ("/camera/top/video", "h264"),
}
MAPPING = {"cameras": {name: topic for name, (topic, _) in CAMERAS.items()}}
ACTION_TOPIC, OUTCOME_TOPIC = "/flywheel/action", "/flywheel/outcome"
COMPRESSED_VIDEO_MSG = (
    "builtin_interfaces/Time timestamp\nstring frame_id\nuint8[] data\nstring format\n"
)


# -- the corpus ---------------------------------------------------------------------------------


def _pictures(seed: int, count: int, size: int) -> list[np.ndarray]:
    """A moving square on a gradient with sensor noise; ``seed`` shifts the hue and the path."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack(
        [x * 200 // size + seed % 50, y * 200 // size, np.full_like(x, 60 + seed % 90)], axis=2
    )
    pictures = []
    for i in range(count):
        pixels = base + rng.integers(0, 10, size=base.shape)
        at = (i * 2 + seed * 7) % (size - 16)
        pixels[at : at + 16, (at * 3) % (size - 16) :][:, :16] = 245
        pictures.append(np.clip(pixels, 0, 255).astype(np.uint8))
    return pictures


def write_log(path: Path, seed: int, episodes: int, episode_s: float, size: int) -> dict:
    """One log of ``episodes`` episodes; returns its camera message count and payload bytes,
    its steps and its size."""
    from mcap_ros2.writer import Writer
    from PIL import Image
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from services.ingest.formats.mcap_writer import H264Encoder

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    typestore.register(
        get_types_from_msg(COMPRESSED_VIDEO_MSG, "foxglove_msgs/msg/CompressedVideo")
    )
    steps = int(episode_s * CONTROL_HZ)
    frames = int(episode_s * CAMERA_HZ) + 1
    facts = {"camera_messages": 0, "camera_bytes": 0, "steps": 0, "episodes": episodes}
    encoder = H264Encoder(size, size, CAMERA_HZ, gop=CAMERA_HZ)
    with open(path, "wb") as stream:
        writer = Writer(stream)
        schemas = {
            name: writer.register_msgdef(name, typestore.generate_msgdef(name, ros_version=2)[0])
            for name in (
                "sensor_msgs/msg/JointState",
                "std_msgs/msg/Float64MultiArray",
                "std_msgs/msg/String",
                "sensor_msgs/msg/CompressedImage",
                "foxglove_msgs/msg/CompressedVideo",
            )
        }
        rng = np.random.default_rng(seed)
        for e in range(episodes):
            start = T0 + seed * 10**13 + e * int((episode_s + 2) * 1e9)
            messages = []  # (log time, topic, schema, message)

            def stamp(at: int) -> dict:
                return {"sec": at // 10**9, "nanosec": at % 10**9}

            info = {"robot_id": f"arm-{seed % 4:02d}", "task": "bin-pick", "kind": "deployment"}
            messages.append(
                (start - 2_000_000, "/flywheel/episode_info", "std_msgs/msg/String",
                 {"data": json.dumps(info)})
            )  # fmt: skip
            for k in range(steps * STATE_HZ // CONTROL_HZ):
                at = start - 1_000_000 + k * 10**9 // STATE_HZ
                state = {
                    "header": {"stamp": stamp(at), "frame_id": "base"},
                    "name": [f"j{i}" for i in range(6)],
                    "position": rng.normal(size=6).tolist(),
                    "velocity": [0.0] * 6,
                    "effort": [],
                }
                messages.append((at, "/joint_states", "sensor_msgs/msg/JointState", state))
            for i in range(steps):
                action = {"layout": {"dim": [], "data_offset": 0}, "data": rng.normal(size=6)}
                action["data"] = action["data"].tolist()
                at = start + i * 10**9 // CONTROL_HZ
                messages.append((at, ACTION_TOPIC, "std_msgs/msg/Float64MultiArray", action))
            end = start + (steps - 1) * 10**9 // CONTROL_HZ
            messages.append((end + 1_000_000, OUTCOME_TOPIC, "std_msgs/msg/String",
                             {"data": "success"}))  # fmt: skip
            pictures = {
                name: _pictures(seed * 1000 + e * 10 + c, frames, size)
                for c, name in enumerate(CAMERAS)
            }
            for name, (topic, kind) in CAMERAS.items():
                for i, pixels in enumerate(pictures[name]):
                    # From 10 ms before the first step, so every step has a frame to hold.
                    at = start - 10_000_000 + i * 10**9 // CAMERA_HZ
                    header = {"stamp": stamp(at), "frame_id": name}
                    if kind == "jpeg":
                        buffer = io.BytesIO()
                        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
                        data = buffer.getvalue()
                        message = {"header": header, "format": "jpeg", "data": data}
                        schema = "sensor_msgs/msg/CompressedImage"
                    else:
                        data = encoder.encode(pixels)
                        message = {"timestamp": stamp(at), "frame_id": name, "format": "h264",
                                   "data": data}  # fmt: skip
                        schema = "foxglove_msgs/msg/CompressedVideo"
                    messages.append((at, topic, schema, message))
                    facts["camera_messages"] += 1
                    facts["camera_bytes"] += len(data)
            messages.sort(key=lambda m: m[0])
            for at, topic, schema, message in messages:
                writer.write_message(topic, schemas[schema], message, log_time=at, publish_time=at)
            facts["steps"] += steps
        writer.finish()
    encoder.close()
    facts["bytes"] = path.stat().st_size
    return facts


def generate(root: Path, logs: int, episodes: int, episode_s: float, size: int) -> dict:
    """``logs`` logs in root/part-0 .. part-3 (the first quarter in part-0); the totals."""
    totals: dict[str, int] = defaultdict(int)
    for seed in range(logs):
        part = root / f"part-{seed * PARTS // logs}"
        part.mkdir(parents=True, exist_ok=True)
        for key, value in write_log(part / f"log-{seed:04d}.mcap", seed, episodes, episode_s,
                                    size).items():  # fmt: skip
            totals[key] += value
    return dict(totals)


# -- measuring ----------------------------------------------------------------------------------


def camera_streams(root: Path) -> list[dict]:
    """Every camera stream of every log, read into memory: {camera, kind, times, payloads,
    episodes: [step times (ns), ...]} (the step times split at each outcome)."""
    from mcap_ros2.reader import read_ros2_messages

    topics = {topic: (name, kind) for name, (topic, kind) in CAMERAS.items()}
    streams = []
    for path in sorted(root.rglob("*.mcap")):
        cameras = {name: {"camera": name, "kind": kind, "times": [], "payloads": []}
                   for name, (_, kind) in CAMERAS.items()}  # fmt: skip
        episodes, steps = [], []
        for message in read_ros2_messages(str(path)):
            topic = message.channel.topic
            if topic in topics:
                camera = cameras[topics[topic][0]]
                camera["times"].append(message.log_time_ns)
                camera["payloads"].append(bytes(message.ros_msg.data))
            elif topic == ACTION_TOPIC:
                steps.append(message.log_time_ns)
            elif topic == OUTCOME_TOPIC and steps:
                episodes.append(np.asarray(steps, dtype=np.int64))
                steps = []
        for camera in cameras.values():
            camera["times"] = np.asarray(camera["times"], dtype=np.int64)
            camera["episodes"] = episodes
            streams.append(camera)
    return streams


def decoded(stream: dict):
    """The stream's frames, decoded by the library alone: RGB arrays in message order."""
    if stream["kind"] == "jpeg":
        from PIL import Image

        for data in stream["payloads"]:
            with Image.open(io.BytesIO(data)) as image:
                yield np.asarray(image.convert("RGB"))
        return
    import av

    codec = av.CodecContext.create("h264", "r")
    for data in stream["payloads"]:
        for frame in codec.decode(av.Packet(data)):
            yield frame.to_ndarray(format="rgb24")
    for frame in codec.decode(None):
        yield frame.to_ndarray(format="rgb24")


def raw_decode(streams: list[dict]) -> int:
    """Decode every camera payload; returns the frames decoded."""
    frames = 0
    for stream in streams:
        for _ in decoded(stream):
            frames += 1
    return frames


def store_floor(streams: list[dict], out: Path, video_format) -> tuple[int, int]:
    """Decode every payload and encode one MP4 per camera per episode, one frame per step (the
    latest frame at or before it), written under ``out``; returns (frames decoded, frames
    encoded)."""
    import av

    decoded_frames = encoded = 0
    for s, stream in enumerate(streams):
        ticks = np.concatenate(stream["episodes"]) if stream["episodes"] else np.zeros(0, int)
        owner = np.repeat(np.arange(len(stream["episodes"])), [len(t) for t in stream["episodes"]])
        held = np.searchsorted(stream["times"], ticks, side="right") - 1
        if (held < 0).any():
            raise ValueError(f"{stream['camera']}: a step before the camera's first frame")
        container = video = None
        episode = -1
        step = frame_index = 0
        for n, pixels in enumerate(decoded(stream)):
            decoded_frames += 1
            while step < len(ticks) and held[step] == n:
                if owner[step] != episode:
                    if container is not None:
                        _close(container, video)
                    episode = int(owner[step])
                    container, video = _open(out / f"{s}-{episode}.mp4", pixels, video_format)
                    frame_index = 0
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts = frame_index
                frame_index += 1
                for packet in video.encode(frame):
                    container.mux(packet)
                encoded += 1
                step += 1
        if container is not None:
            _close(container, video)
    return decoded_frames, encoded


def _open(path: Path, pixels: np.ndarray, video_format):
    from fractions import Fraction

    import av

    container = av.open(str(path), "w", format="mp4")
    video = container.add_stream(
        video_format.codec, rate=CONTROL_HZ, options=video_format.options()
    )
    video.width, video.height = pixels.shape[1], pixels.shape[0]
    video.pix_fmt = video_format.pix_fmt
    video.time_base = Fraction(1, CONTROL_HZ)
    return container, video


def _close(container, video) -> None:
    for packet in video.encode(None):
        container.mux(packet)
    container.close()


def stored_videos(store_root: Path) -> tuple[int, int]:
    """(bytes, frames) of the store's videos/ files."""
    import av

    size = frames = 0
    for path in sorted((store_root / "videos").rglob("*.mp4")):
        size += path.stat().st_size
        with av.open(str(path)) as container:
            frames += container.streams.video[0].frames
    return size, frames


def prepared_settings(home: Path):
    """A fresh FLYWHEEL_HOME with its store migrated (not part of what is timed)."""
    os.environ["FLYWHEEL_HOME"] = str(home)
    from services.config import Settings, configure_runtime
    from services.store import migrate

    settings = Settings()
    configure_runtime(settings)
    migrate(settings.db_url)
    return settings


def ingest(source: Path, settings) -> dict:
    """``ingest_logs`` with the cameras mapped; the episodes ingested and the store's videos."""
    from services.ingest.batch import ingest_logs
    from services.ingest.mapping import parse_mapping

    summary = ingest_logs(settings, source=str(source), mapping=parse_mapping(MAPPING))
    if summary.quarantined or summary.duplicates:
        raise SystemExit(
            f"benchmark logs quarantined ({summary.quarantined}) or duplicates "
            f"({summary.duplicates}): {summary.quarantined_files[:3]}"
        )
    return {"episodes": summary.ingested}


def _child(what: str, source: str, scratch: str) -> None:
    import av  # noqa: F401  (imported before the clock, as ingest's libraries are)
    from PIL import Image  # noqa: F401

    from services.config import Settings
    from services.episodes.cameras import VideoFormat

    result: dict = {}
    if what == "ingest":
        # Import cost (GX, SQLAlchemy, pyarrow) and migrations are paid once a night, not per log.
        import great_expectations  # noqa: F401

        import services.ingest.batch  # noqa: F401

        settings = prepared_settings(Path(scratch))
    else:
        streams = camera_streams(Path(source))
        video = Settings().video
        video_format = VideoFormat(codec=video.codec, gop=video.gop, crf=video.crf)
    # Peak memory before the clock starts: the imported libraries, the corpus's payloads.
    result["ready_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu = time.perf_counter(), time.process_time()
    if what == "raw":
        result["frames"] = raw_decode(streams)
    elif what == "floor":
        out = Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        result["frames"], result["encoded"] = store_floor(streams, out, video_format)
    else:
        result.update(ingest(Path(source), settings))
    result["seconds"], result["cpu"] = time.perf_counter() - started, time.process_time() - cpu
    if what == "floor":
        result["bytes"] = sum(p.stat().st_size for p in Path(scratch).glob("*.mp4"))
    if what == "ingest":
        result["bytes"], result["stored_frames"] = stored_videos(settings.episode_store)
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(what: str, source: Path, scratch: Path, timeout_s: float = 1800) -> dict:
    """One measurement in a fresh process (stopped after ``timeout_s``)."""
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--measure", what, str(source), str(scratch)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        # Seen once here, under a load average of 24 on 2 CPUs: the ingest child waited for
        # ever in libsvtav1's flush (svt_av1_enc_get_packet, from _TrackBuilder.finish).
        raise SystemExit(f"{what} on {source} ran past {timeout_s} s") from None
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logs", type=int, default=8, help="logs in the corpus (>= 4)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes per log")
    parser.add_argument("--episode-s", type=float, default=10.0, help="seconds per episode")
    parser.add_argument("--size", type=int, default=96, help="camera width and height (px)")
    parser.add_argument("--quick", action="store_true", help="4 logs of 2 episodes of 5 s")
    parser.add_argument("--scratch", default=None, help="folder for the corpus (default: tmp)")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        return _child(*args.measure)
    if args.quick:
        args.logs, args.episodes, args.episode_s = 4, 2, 5.0
    if args.logs < PARTS:
        parser.error(f"--logs must be at least {PARTS} (the quarter run ingests one of four)")
    from services.config import Settings
    from services.episodes.cameras import VideoFormat

    video = Settings().video
    scratch = Path(tempfile.mkdtemp(prefix="flywheel-camera-bench-", dir=args.scratch))
    try:
        corpus = scratch / "corpus"
        started = time.perf_counter()
        log = generate(corpus, args.logs, args.episodes, args.episode_s, args.size)
        written = time.perf_counter() - started
        raw = measure("raw", corpus, scratch / "raw")
        floor = measure("floor", corpus, scratch / "floor")
        quarter = measure("ingest", corpus / "part-0", scratch / "home-q")
        full = measure("ingest", corpus, scratch / "home")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    frames = log["camera_messages"]
    if raw["frames"] != frames or floor["frames"] != frames:
        raise SystemExit(f"decoded {raw['frames']} / {floor['frames']} of {frames} frames")
    stored_expected = log["steps"] * len(CAMERAS)
    if full["stored_frames"] != stored_expected or floor["encoded"] != stored_expected:
        raise SystemExit(
            f"stored {full['stored_frames']} (floor {floor['encoded']}) of {stored_expected} "
            "frames (one per step and camera)"
        )
    load = os.getloadavg()
    fmt = VideoFormat(codec=video.codec, gop=video.gop, crf=video.crf)
    print(
        f"corpus: {args.logs} ROS 2 MCAP logs x {args.episodes} episodes x {args.episode_s:g} s "
        f"({log['bytes'] / 2**20:.1f} MiB, written in {written:.0f} s); {len(CAMERAS)} cameras "
        f"at {CAMERA_HZ} Hz, {args.size}x{args.size} (2 JPEG, 1 H.264), control {CONTROL_HZ} Hz"
    )
    print(
        f"store video format: {fmt.codec} gop {fmt.gop} crf {fmt.quality}; "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'':<8} {'frames':>7} {'wall s':>7} {'frames/s':>9} {'cpu s':>7} {'peak MiB':>9}")
    for name, row in (("raw", raw), ("floor", floor), ("ingest", full)):
        print(
            f"{name:<8} {frames:>7} {row['seconds']:>7.1f} {frames / row['seconds']:>9.0f} "
            f"{row['cpu']:>7.1f} {row['peak_mib']:>9.0f}"
        )
    print(
        f"ingest/raw {raw['seconds'] / full['seconds']:.3f} (cpu {raw['cpu'] / full['cpu']:.3f})"
        f"   ingest/floor {floor['seconds'] / full['seconds']:.2f} "
        f"(cpu {floor['cpu'] / full['cpu']:.2f})   (frames/s over frames/s)"
    )
    stored = full["stored_frames"]
    raw_rgb = args.size * args.size * 3
    per_stored = full["bytes"] / stored
    per_logged = log["camera_bytes"] / frames
    print(
        f"bytes per stored frame {per_stored:.0f} ({stored} frames: one per step and camera; "
        f"floor {floor['bytes'] / floor['encoded']:.0f}); raw RGB {raw_rgb} "
        f"({raw_rgb / per_stored:.0f}x); log {per_logged:.0f} per logged frame at {CAMERA_HZ} Hz"
    )
    seconds = log["steps"] / CONTROL_HZ * len(CAMERAS)
    print(
        f"bytes per camera-second: stored {full['bytes'] / seconds:.0f}, "
        f"log {log['camera_bytes'] / seconds:.0f} ({log['camera_bytes'] / full['bytes']:.1f}x)"
    )
    print(
        f"peak RSS of ingest: quarter ({quarter['episodes']} episodes) "
        f"{quarter['peak_mib']:.0f} MiB, all ({full['episodes']}) {full['peak_mib']:.0f} MiB: "
        f"{full['peak_mib'] / quarter['peak_mib']:.2f}x for "
        f"{full['episodes'] / quarter['episodes']:.0f}x the episodes; "
        f"{full['ready_mib']:.0f} MiB before ingest began (imports, the migrated home)"
    )


if __name__ == "__main__":
    main()
