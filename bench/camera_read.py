"""Peak memory of reading a ROS 2 MCAP with three 30 Hz cameras: a 1-minute and a 10-minute
log side by side (issue 19: a long log is never held whole; under 1 GiB, flat in length).

    python bench/camera_read.py [--minutes 1 10] [--size 96] [--episode-s 30]

Each log is written streaming (never held whole either) to a temporary directory: joint states
at 30 Hz, actions at 10 Hz (the control rate), an outcome every ``--episode-s`` seconds (so the
log splits into episodes), and three cameras at 30 Hz: ``front`` and ``wrist`` as JPEG
``sensor_msgs/msg/CompressedImage``, ``top`` as H.264 ``foxglove_msgs/msg/CompressedVideo``.
Each read runs in a fresh process (``read_mcap`` with the cameras mapped, tracks encoded as the
store's ``VideoFormat`` says), which reports its own peak resident memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONTROL_HZ, STATE_HZ, CAMERA_HZ = 10, 30, 30
T0 = 1_767_225_600_000_000_000
CAMERAS = {
    "front": "/camera/front/compressed",
    "wrist": "/camera/wrist/compressed",
    "top": "/camera/top/video",
}
COMPRESSED_VIDEO_MSG = (
    "builtin_interfaces/Time timestamp\nstring frame_id\nuint8[] data\nstring format\n"
)


def _pictures(size: int, count: int) -> list[np.ndarray]:
    """A moving scene: a bright square crossing a gradient, one picture per frame."""
    y, x = np.mgrid[0:size, 0:size]
    pictures = []
    for i in range(count):
        pixels = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 90)], axis=2)
        pixels = pixels.astype(np.uint8)
        at = (i * 3) % (size - 16)
        pixels[at : at + 16, at : at + 16] = 250
        pictures.append(pixels)
    return pictures


def write_log(path: Path, minutes: float, size: int, episode_s: float) -> dict:
    """Writes the log streaming; returns its size and message counts."""
    from mcap.writer import CompressionType
    from mcap_ros2.writer import Writer
    from PIL import Image
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from services.ingest.formats.mcap_writer import H264Encoder

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    typestore.register(
        get_types_from_msg(COMPRESSED_VIDEO_MSG, "foxglove_msgs/msg/CompressedVideo")
    )
    # A cycle of distinct pictures (4 s), encoded once; the log repeats them.
    cycle = _pictures(size, 4 * CAMERA_HZ)
    jpegs = []
    for pixels in cycle:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        jpegs.append(buffer.getvalue())
    encoder = H264Encoder(size, size, CAMERA_HZ, gop=len(cycle))
    units = [encoder.encode(p) for p in cycle]  # a keyframe starts each cycle
    encoder.close()
    seconds = minutes * 60
    counts = {"camera": 0, "other": 0}
    with open(path, "wb") as stream:
        # Uncompressed: the pictures repeat, which zstd would fold away; a real log's do not.
        writer = Writer(stream, compression=CompressionType.NONE)
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

        def write(topic: str, schema: str, message: dict, at: int) -> None:
            writer.write_message(topic, schemas[schema], message, log_time=at, publish_time=at)

        info = {"robot_id": "arm-01", "task": "bin-pick", "kind": "deployment"}
        write("/flywheel/episode_info", "std_msgs/msg/String", {"data": json.dumps(info)}, T0)
        # Every stream at its own rate, merged in time order as a recorder writes them.
        tick = 1_000_000_000 // (CONTROL_HZ * STATE_HZ * CAMERA_HZ // 10)
        period = {k: 1_000_000_000 // hz for k, hz in (("state", STATE_HZ), ("action", CONTROL_HZ))}
        camera_period = 1_000_000_000 // CAMERA_HZ
        next_outcome = int(episode_s * 1e9)
        n_state = n_action = n_frame = 0
        end = int(seconds * 1e9)
        at = 0
        while at < end:
            stamp = {"sec": (T0 + at) // 10**9, "nanosec": (T0 + at) % 10**9}
            header = {"stamp": stamp, "frame_id": "camera"}
            if at >= n_state * period["state"]:
                n_state += 1
                state = {
                    "header": header,
                    "name": [f"j{i}" for i in range(6)],
                    "position": np.sin(np.arange(6) + at / 1e9).tolist(),
                    "velocity": [0.0] * 6,
                    "effort": [],
                }
                write("/joint_states", "sensor_msgs/msg/JointState", state, T0 + at)
                counts["other"] += 1
            if at >= n_action * period["action"] + 1_000_000:
                n_action += 1
                action = {"layout": {"dim": [], "data_offset": 0}, "data": [0.1] * 6}
                write("/flywheel/action", "std_msgs/msg/Float64MultiArray", action, T0 + at)
                counts["other"] += 1
            if at >= n_frame * camera_period:
                k = n_frame % len(cycle)
                n_frame += 1
                for name in ("front", "wrist"):
                    image = {"header": header, "format": "jpeg", "data": jpegs[k]}
                    write(CAMERAS[name], "sensor_msgs/msg/CompressedImage", image, T0 + at)
                video = {"timestamp": stamp, "frame_id": "top", "format": "h264", "data": units[k]}
                write(CAMERAS["top"], "foxglove_msgs/msg/CompressedVideo", video, T0 + at)
                counts["camera"] += 3
            if at >= next_outcome:
                write("/flywheel/outcome", "std_msgs/msg/String", {"data": "success"}, T0 + at)
                next_outcome += int(episode_s * 1e9)
            at += tick
        writer.finish()
    return {"bytes": path.stat().st_size, **counts}


def child(path: str, spool: str) -> None:
    from services.ingest.mapping import parse_mapping
    from services.ingest.readers import read_mcap

    mapping = parse_mapping({"cameras": dict(CAMERAS)})
    started = time.perf_counter()
    episodes = read_mcap(Path(path), mapping, directory=spool)
    seconds = time.perf_counter() - started
    frames = sum(e.steps for e in episodes) * len(CAMERAS)
    tracks = [t for e in episodes for t in e.cameras.values()]
    stored = sum(t.path.stat().st_size for t in tracks if t.path is not None)
    unusable = sum(t.path is None for t in tracks)
    for track in tracks:
        track.discard()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "episodes": len(episodes),
                "frames": frames,
                "seconds": seconds,
                "peak_mib": peak_kib / 1024,
                "tracks_bytes": stored,
                "unusable_tracks": unusable,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--size", type=int, default=96, help="camera width and height (px)")
    parser.add_argument("--episode-s", type=float, default=30.0)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            path = Path(tmp) / f"log-{minutes}.mcap"
            started = time.perf_counter()
            log = write_log(path, minutes, args.size, args.episode_s)
            written = time.perf_counter() - started
            spool = Path(tmp) / "spool"
            spool.mkdir(exist_ok=True)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path), str(spool)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            rows.append((minutes, log, written, result))
            path.unlink()
    print(
        f"ROS 2 MCAP, 3 cameras at {CAMERA_HZ} Hz ({args.size}x{args.size}; 2 JPEG, 1 H.264), "
        f"control {CONTROL_HZ} Hz, an episode every {args.episode_s:g} s"
    )
    print(
        f"{'minutes':>8} {'log MiB':>8} {'camera msgs':>11} {'episodes':>8} "
        f"{'read s':>7} {'frames/s':>9} {'peak MiB':>9}"
    )
    for minutes, log, _, result in rows:
        print(
            f"{minutes:>8g} {log['bytes'] / 2**20:>8.1f} {log['camera']:>11} "
            f"{result['episodes']:>8} {result['seconds']:>7.1f} "
            f"{log['camera'] / result['seconds']:>9.0f} {result['peak_mib']:>9.0f}"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            f"peak memory {last[0]:g} min / {first[0]:g} min: "
            f"{last[3]['peak_mib'] / first[3]['peak_mib']:.2f}x for "
            f"{last[1]['camera'] / first[1]['camera']:.0f}x the camera messages "
            f"(target: under 1024 MiB, flat in length)"
        )
    bad = [r for r in rows if r[3]["unusable_tracks"]]
    if bad:
        print(f"warning: {sum(r[3]['unusable_tracks'] for r in bad)} tracks unusable")


if __name__ == "__main__":
    main()
