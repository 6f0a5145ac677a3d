"""Camera topics in logs: every container and message type read into one track per episode,
aligned by the mapping's clock, judged with the mapping's staleness limit; bad frames named
by camera and step, never a lost log."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest

from services.episodes.model import LogFormatError
from services.ingest.formats.json_mcap import read_episode_mcap
from services.ingest.formats.mcap_writer import h264_frames, write_episode_mcap
from services.ingest.mapping import FleetMapping, parse_mapping
from services.ingest.readers import read_bag, read_mcap
from tests.ingest import cameras
from tests.ingest.logs import recording, step, write_bad_camera_uploads, write_raw
from tests.ingest.ros_logs import (
    CAMERA_INFO,
    CAMERA_MAPPING,
    COMPRESSED_IMAGE,
    COMPRESSED_VIDEO,
    IMAGE,
    PROTOBUF_VIDEO,
    T0,
    WRITERS,
    Msg,
    camera_log,
    camera_messages,
    episode_messages,
    write_bad_camera_logs,
    write_ros2_mcap,
)

CONTAINERS = sorted(WRITERS)
# 30 Hz from 10 ms before the first 10 Hz action: step i shows frame 3i.
START = T0 - 10_000_000


def read(container: str, messages: list[Msg], folder: Path, mapping: FleetMapping, **kwargs):
    path = WRITERS[container](messages, folder)
    if container == "ros2-mcap":
        return read_mcap(path, mapping, **kwargs)
    return read_bag(path, mapping, **kwargs)


def decoded(track) -> list[np.ndarray]:
    with av.open(str(track.path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def shown(track, mono: bool = False) -> list[int]:
    """Which frame (``cameras.frame``) each step of a track shows."""
    return [cameras.index(f, mono) for f in decoded(track)]


def frames(*indices: int) -> list[int]:
    """``shown``'s answer for these frames (their colours repeat every ``cameras.CYCLE``)."""
    return [i % cameras.CYCLE for i in indices]


def all_types(n: int = 63) -> tuple[dict, list[Msg]]:
    """One camera per message type Flywheel reads (ROS 1 and 2 alike), frames 0..n-1."""
    pictures = [cameras.frame(i) for i in range(n)]
    w, h = cameras.WIDTH, cameras.HEIGHT
    payloads = {
        "rgb": [(IMAGE, (w, h, "rgb8", f.tobytes())) for f in pictures],
        "bgr": [(IMAGE, (w, h, "bgr8", f[..., ::-1].tobytes())) for f in pictures],
        "mono": [(IMAGE, (w, h, "mono8", f[..., 0].tobytes())) for f in pictures],
        "jpeg": [(COMPRESSED_IMAGE, ("jpeg", cameras.jpeg(f))) for f in pictures],
        "png": [(COMPRESSED_IMAGE, ("png", cameras.png(f))) for f in pictures],
        "video": [(COMPRESSED_VIDEO, ("h264", u)) for u in cameras.h264(pictures)],
    }
    messages = episode_messages(steps=20)
    for name, items in payloads.items():
        messages += camera_messages(f"/cam/{name}", items, start_ns=START)
    mapping = {"cameras": {name: f"/cam/{name}" for name in payloads}}
    return mapping, sorted(messages, key=lambda m: m.t_ns)


@pytest.mark.parametrize("container", CONTAINERS)
def test_each_message_type_becomes_one_frame_per_step_in_every_container(container, tmp_path):
    mapping, messages = all_types()
    [raw] = read(container, messages, tmp_path / "log", parse_mapping(mapping), directory=tmp_path)
    assert sorted(raw.cameras) == ["bgr", "jpeg", "mono", "png", "rgb", "video"]
    for name, track in raw.cameras.items():
        facts = track.facts
        assert track.path is not None and track.path.parent == tmp_path, (name, facts)
        assert (facts.width, facts.height) == (cameras.WIDTH, cameras.HEIGHT)
        assert facts.stale_steps == facts.missing_steps == 0 and facts.decode_error is None
        # the latest frame at or before each step: step i shows frame 3i
        assert shown(track, mono=name == "mono") == frames(*(3 * i for i in range(20))), name
    encodings = {name: t.facts.encoding for name, t in raw.cameras.items()}
    assert encodings == {
        "rgb": "rgb8",
        "bgr": "bgr8",
        "mono": "mono8",
        "jpeg": "jpeg",
        "png": "png",
        "video": "h264",
    }
    # the same pixels make the same digest: raw, BGR and PNG are lossless
    assert raw.cameras["rgb"].digest == raw.cameras["bgr"].digest == raw.cameras["png"].digest
    for track in raw.cameras.values():
        track.discard()
    assert not list(tmp_path.glob("*.mp4"))


def test_protobuf_compressed_video_mixes_with_cdr_channels_even_when_it_comes_first(tmp_path):
    pictures = [cameras.frame(i) for i in range(63)]
    units = cameras.h264(pictures)
    # the camera's first message comes 20 ms before any CDR message
    messages = episode_messages(steps=20) + camera_messages(
        "/cam/front", [(PROTOBUF_VIDEO, ("h264", u)) for u in units], start_ns=T0 - 30_000_000
    )
    messages.sort(key=lambda m: m.t_ns)
    assert messages[0].msgtype == PROTOBUF_VIDEO
    path = write_ros2_mcap(messages, tmp_path / "log.mcap")
    [raw] = read_mcap(path, parse_mapping({"cameras": {"front": "/cam/front"}}))
    track = raw.cameras["front"]
    assert track.facts.encoding == "h264" and track.facts.frames == 57
    assert shown(track) == frames(*(3 * i for i in range(20)))
    track.discard()


def test_the_header_clock_aligns_frames_by_their_stamps_not_their_log_times(tmp_path):
    pictures = [cameras.frame(i) for i in range(63)]
    # each frame is stamped when it was taken, 50 ms before it was logged: a ROS header.stamp
    # and a protobuf CompressedVideo's timestamp
    units = cameras.h264(pictures)
    messages = (
        episode_messages(steps=20)
        + camera_messages(
            "/cam/front",
            [(COMPRESSED_IMAGE, ("jpeg", cameras.jpeg(f))) for f in pictures],
            start_ns=START,
            stamp_offset_ns=-50_000_000,
        )
        + camera_messages(
            "/cam/video",
            [(PROTOBUF_VIDEO, ("h264", u)) for u in units],
            start_ns=START,
            stamp_offset_ns=-50_000_000,
        )
    )
    messages.sort(key=lambda m: m.t_ns)
    path = write_ros2_mcap(messages, tmp_path / "log.mcap")
    cams = {"front": "/cam/front", "video": "/cam/video"}
    [by_log] = read_mcap(path, parse_mapping({"cameras": cams}))
    [by_stamp] = read_mcap(path, parse_mapping({"cameras": cams, "clock": "header"}))
    for name in cams:
        assert shown(by_log.cameras[name]) == frames(*(3 * i for i in range(20)))
        # 50 ms earlier: at step i, frame 3i + 1 was already taken
        assert shown(by_stamp.cameras[name]) == frames(*(3 * i + 1 for i in range(20)))
    for raw in (by_log, by_stamp):
        for track in raw.cameras.values():
            track.discard()


@pytest.mark.parametrize("container", CONTAINERS)
def test_the_staleness_limit_comes_from_the_mapping(container, tmp_path):
    # a 5 Hz camera: at a 10 Hz control rate every other step holds a 110 ms old frame
    pictures = [cameras.frame(i) for i in range(12)]
    messages = episode_messages(steps=20) + camera_messages(
        "/cam/slow",
        [(COMPRESSED_IMAGE, ("jpeg", cameras.jpeg(f))) for f in pictures],
        start_ns=START,
        period_ns=200_000_000,
    )
    messages.sort(key=lambda m: m.t_ns)
    strict = {"cameras": {"slow": {"topic": "/cam/slow", "max_age_s": 0.1}}}
    loose = {"cameras": {"slow": {"topic": "/cam/slow", "max_age_s": 0.25}}}
    [raw] = read(container, messages, tmp_path / "a", parse_mapping(strict))
    facts = raw.cameras["slow"].facts
    assert (facts.stale_steps, facts.first_stale_step) == (10, 1)
    assert facts.max_age_s == pytest.approx(0.11)
    [raw] = read(container, messages, tmp_path / "b", parse_mapping(loose))
    assert raw.cameras["slow"].facts.stale_steps == 0
    raw.cameras["slow"].discard()


def test_a_log_split_into_episodes_gives_each_its_own_track(tmp_path):
    second = T0 + 5_000_000_000
    messages = episode_messages(steps=20) + episode_messages(steps=10, start_ns=second)
    pictures = [cameras.frame(i) for i in range(180)]  # 6 s of one camera over both
    messages += camera_messages(
        "/cam/front",
        [(COMPRESSED_VIDEO, ("h264", u)) for u in cameras.h264(pictures)],
        start_ns=START,
    )
    messages.sort(key=lambda m: m.t_ns)
    path = write_ros2_mcap(messages, tmp_path / "log.mcap")
    first, other = read_mcap(path, parse_mapping({"cameras": {"front": "/cam/front"}}))
    assert (first.steps, other.steps) == (20, 10)
    assert shown(first.cameras["front"]) == frames(*(3 * i for i in range(20)))
    # the second episode starts 5 s in, at frame 150
    assert shown(other.cameras["front"]) == frames(*(150 + 3 * i for i in range(10)))
    assert len(decoded(other.cameras["front"])) == 10
    for raw in (first, other):
        raw.cameras["front"].discard()


@pytest.mark.parametrize("container", CONTAINERS)
def test_camera_info_on_a_camera_topic_is_refused_naming_the_camera(container, tmp_path):
    messages = episode_messages(steps=5) + [Msg("/cam/info", CAMERA_INFO, T0, None)]
    mapping = parse_mapping({"cameras": {"front": "/cam/info"}})
    with pytest.raises(LogFormatError, match="camera front: .*CameraInfo.*out of scope"):
        read(container, sorted(messages, key=lambda m: m.t_ns), tmp_path, mapping)


def check_bad_camera(path: Path, expect: dict, mapping: FleetMapping, cameras: set[str]) -> None:
    """The reader says what ``expect`` says of a bad camera log, and loses nothing else."""
    name = path.name
    if "error" in expect:
        with pytest.raises(LogFormatError, match=expect["error"]):
            read_mcap(path, mapping)
        return
    [raw] = read_mcap(path, mapping)
    # nothing good is lost: every step, and the other cameras' frames
    assert raw.steps == 20 and set(raw.cameras) == cameras, name
    bad = raw.cameras[expect["camera"]]
    for other in cameras - {expect["camera"]}:
        good = raw.cameras[other]
        assert good.path is not None and good.facts.decode_error is None, name
        good.discard()
    assert bad.path is None, name  # no video from frames that cannot make one
    fact = getattr(bad.facts, expect["fact"])
    if expect["fact"] == "missing_steps":
        assert fact == 20 and bad.facts.frames == 0, name
    else:
        assert fact[0] == expect["step"], (name, fact)
    if expect["fact"] == "decode_error":
        assert expect["fragment"] in fact[1], (name, fact)


def test_every_bad_camera_log_reads_with_the_camera_and_step_named(tmp_path):
    expected = write_bad_camera_logs(tmp_path / "bad")
    mapping = parse_mapping(CAMERA_MAPPING)
    for name, expect in expected.items():
        check_bad_camera(tmp_path / "bad" / name, expect, mapping, {"front", "wrist"})


def test_every_bad_contract_camera_reads_with_the_camera_and_step_named(tmp_path):
    expected = write_bad_camera_uploads(tmp_path / "bad")
    for name, expect in expected.items():
        check_bad_camera(tmp_path / "bad" / name, expect, FleetMapping(), {"front"})


def cut_message(source: Path, target: Path, topic: str, number: int) -> Path:
    """A copy of an MCAP with message ``number`` of ``topic`` cut to 12 bytes: the file is
    whole, one message is not."""
    from mcap.reader import make_reader
    from mcap.writer import Writer

    with open(source, "rb") as f, open(target, "wb") as out:
        writer = Writer(out)
        writer.start()
        schemas, channels, seen = {}, {}, 0
        for schema, channel, message in make_reader(f).iter_messages(log_time_order=False):
            if schema.id not in schemas:
                schemas[schema.id] = writer.register_schema(
                    schema.name, schema.encoding, schema.data
                )
            if channel.id not in channels:
                channels[channel.id] = writer.register_channel(
                    channel.topic, channel.message_encoding, schemas[schema.id]
                )
            data = message.data
            if channel.topic == topic:
                if seen == number:
                    data = data[:12]
                seen += 1
            writer.add_message(channels[channel.id], message.log_time, data, message.publish_time)
        writer.finish()
    return target


def test_a_camera_message_that_cannot_be_decoded_is_a_lost_frame_named_by_its_step(tmp_path):
    whole = write_ros2_mcap(camera_log(), tmp_path / "whole.mcap")
    path = cut_message(whole, tmp_path / "cut.mcap", "/camera/wrist/compressed", 30)
    [raw] = read_mcap(path, parse_mapping(CAMERA_MAPPING))
    assert raw.steps == 20
    step, why = raw.cameras["wrist"].facts.decode_error
    assert step == 10 and "undecodable" in why
    assert raw.cameras["front"].path is not None
    raw.cameras["front"].discard()
    # an empty CompressedImage decodes, but is no picture
    wrist = [cameras.jpeg(cameras.frame(i)) for i in range(63)]
    wrist[30] = b""
    path = write_ros2_mcap(camera_log(wrist=wrist), tmp_path / "empty.mcap")
    [raw] = read_mcap(path, parse_mapping(CAMERA_MAPPING))
    assert raw.cameras["wrist"].facts.decode_error == (10, "corrupt JPEG (not an image)")
    raw.cameras["front"].discard()


def test_spools_are_closed_when_the_log_is_refused(tmp_path):
    log = [m for m in camera_log() if m.topic != "/flywheel/action"]
    path = write_ros2_mcap(log, tmp_path / "log.mcap")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(LogFormatError, match="no messages on the mapped action topic"):
            read_mcap(path, parse_mapping(CAMERA_MAPPING))
    assert len(os.listdir("/proc/self/fd")) == before


def test_the_json_contract_carries_cameras_as_protobuf_compressed_video(tmp_path):
    rec = recording(n=20)  # 10 Hz
    pictures = [(k / 30 - 0.01, cameras.frame(k)) for k in range(60)]
    path = write_episode_mcap(rec, tmp_path / "ep.mcap", cameras={"front": h264_frames(pictures)})
    raw = read_episode_mcap(path, directory=tmp_path)
    track = raw.cameras["front"]
    assert track.facts.encoding == "h264" and track.path.parent == tmp_path
    assert shown(track) == frames(*(3 * i for i in range(20)))
    assert track.fps == 10
    track.discard()
    # the mapping's own limits for a contract camera it names; the default limit otherwise
    slow = [(k / 5 - 0.01, cameras.frame(k)) for k in range(10)]
    path = write_episode_mcap(rec, tmp_path / "slow.mcap", cameras={"front": h264_frames(slow)})
    [raw] = read_mcap(path)
    assert raw.cameras["front"].facts.stale_steps == 10
    named = parse_mapping(
        {"cameras": {"front": {"topic": "/flywheel/camera/front", "max_age_s": 1}}}
    )
    [raw] = read_mcap(path, named)
    assert raw.cameras["front"].facts.stale_steps == 0
    raw.cameras["front"].discard()


def test_a_contract_camera_whose_stream_is_damaged_names_the_step(tmp_path):
    units = cameras.h264([cameras.frame(k) for k in range(60)])
    units[30] = units[30][:5]
    pictures = [(k / 30 - 0.01, unit) for k, unit in enumerate(units)]
    path = write_episode_mcap(recording(n=20), tmp_path / "ep.mcap", cameras={"front": pictures})
    [raw] = read_mcap(path)
    assert raw.steps == 20
    assert raw.cameras["front"].facts.decode_error[0] == 10
    assert raw.cameras["front"].path is None


def test_a_contract_camera_may_log_foxglove_json_images(tmp_path):
    import base64

    images = [
        {"timestamp": {"sec": 0, "nsec": k}, "frame_id": "top", "format": "png"}
        | {"data": base64.b64encode(cameras.png(cameras.frame(k))).decode()}
        for k in range(5)
    ]
    steps = [step(i) for i in range(5)]
    path = write_raw(
        tmp_path / "ep.mcap", steps, cameras={"top": ("foxglove.CompressedImage", images)}
    )
    [raw] = read_mcap(path)
    track = raw.cameras["top"]
    assert track.facts.encoding == "png" and track.facts.frames == 5
    assert shown(track) == frames(0, 1, 2, 3, 4)
    track.discard()
