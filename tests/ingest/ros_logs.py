"""ROS logs for the tests: one description of an episode's messages, written as a ROS 2 MCAP
(mcap-ros2-support), a ROS 2 sqlite3 bag and a ROS 1 bag (rosbags)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

JOINT_STATE = "sensor_msgs/msg/JointState"
FLOAT_ARRAY = "std_msgs/msg/Float64MultiArray"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"
INT32 = "std_msgs/msg/Int32"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
COMPRESSED_VIDEO = "foxglove_msgs/msg/CompressedVideo"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
# foxglove.CompressedVideo on a protobuf channel (MCAP only), value (format, data).
PROTOBUF_VIDEO = "foxglove.CompressedVideo"
# Foxglove's ROS 2 message (foxglove_msgs), which the ROS typestores do not have.
COMPRESSED_VIDEO_MSG = (
    "builtin_interfaces/Time timestamp\nstring frame_id\nuint8[] data\nstring format\n"
)

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
INFO = {"robot_id": "arm-01", "task": "bin-pick", "policy_version": "7", "kind": "deployment"}


@dataclass(frozen=True)
class Msg:
    topic: str
    msgtype: str
    t_ns: int
    # JointState: position list (or {"position": [...], "velocity": [...]});
    # Float64MultiArray: data list; String/Bool/Int32: data;
    # Image: (width, height, encoding, pixels); CompressedImage, CompressedVideo: (format, data).
    value: object
    # The message's own time (header.stamp or timestamp) when it differs from the log time.
    stamp_ns: int | None = None

    @property
    def stamp(self) -> int:
        return self.t_ns if self.stamp_ns is None else self.stamp_ns


def camera_messages(
    topic: str,
    payloads: list[tuple[str, object]],
    *,
    start_ns: int = T0,
    period_ns: int = 1_000_000_000 // 30,
    stamp_offset_ns: int = 0,
) -> list[Msg]:
    """A camera's messages, one per (msgtype, value), every ``period_ns`` from ``start_ns``;
    each stamped ``stamp_offset_ns`` after its log time."""
    return [
        Msg(
            topic,
            msgtype,
            start_ns + i * period_ns,
            value,
            start_ns + i * period_ns + stamp_offset_ns,
        )
        for i, (msgtype, value) in enumerate(payloads)
    ]


def episode_messages(
    steps: int = 20,
    state_dim: int = 4,
    action_dim: int = 2,
    *,
    state_every: int = 3,
    start_ns: int = T0,
    outcome: str | None = "success",
    operator_steps: range = range(5, 9),
    info: dict | None = INFO,
) -> list[Msg]:
    """A 10 Hz action stream, state at ``state_every`` x that rate (sub-steps offset by 1 ms),
    the operator in control for ``operator_steps``, an outcome after the last action."""
    rng = np.random.default_rng(steps)
    period = 100_000_000
    messages = []
    if info is not None:
        messages.append(Msg("/flywheel/episode_info", STRING, start_ns, json.dumps(info)))
    # state starts 1 ms before the first action, so the first step has one to hold
    for k in range(steps * state_every):
        at = start_ns - 1_000_000 + k * period // state_every
        messages.append(Msg("/joint_states", JOINT_STATE, at, rng.normal(size=state_dim).tolist()))
    source = None
    for i in range(steps):
        at = start_ns + i * period
        now = "operator" if i in operator_steps else "policy"
        if now != source:
            messages.append(Msg("/flywheel/control_source", STRING, at - 500_000, now))
            source = now
        action = rng.uniform(-1, 1, size=action_dim).tolist()
        messages.append(Msg("/flywheel/action", FLOAT_ARRAY, at, action))
    if outcome is not None:
        at = start_ns + (steps - 1) * period + 50_000_000
        messages.append(Msg("/flywheel/outcome", STRING, at, outcome))
    return sorted(messages, key=lambda m: m.t_ns)


TYPESTORES = {2: Stores.ROS2_HUMBLE, 1: Stores.ROS1_NOETIC}


def _typestore(version: int):
    typestore = get_typestore(TYPESTORES[version])
    typestore.register(get_types_from_msg(COMPRESSED_VIDEO_MSG, COMPRESSED_VIDEO))
    return typestore


def _message(typestore, msg: Msg):
    types = typestore.types
    time = types["builtin_interfaces/msg/Time"](sec=msg.stamp // 10**9, nanosec=msg.stamp % 10**9)
    if msg.msgtype == IMAGE:
        width, height, encoding, pixels = msg.value
        data = np.frombuffer(bytes(pixels), dtype=np.uint8)
        step = width * (1 if encoding == "mono8" else 3)
        return types[IMAGE](
            header=_header(types, time),
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=step,
            data=data,
        )
    if msg.msgtype == COMPRESSED_IMAGE:
        fmt, data = msg.value
        return types[COMPRESSED_IMAGE](
            header=_header(types, time), format=fmt, data=np.frombuffer(data, dtype=np.uint8)
        )
    if msg.msgtype == COMPRESSED_VIDEO:
        fmt, data = msg.value
        return types[COMPRESSED_VIDEO](
            timestamp=time, frame_id="camera", data=np.frombuffer(data, np.uint8), format=fmt
        )
    if msg.msgtype == CAMERA_INFO:
        return _camera_info(types, time)
    if msg.msgtype == JOINT_STATE:
        header = _header(types, time)
        position, velocity = _joints(msg.value)
        return types[JOINT_STATE](
            header=header,
            name=[f"joint{i}" for i in range(len(position))],
            position=np.asarray(position, dtype=np.float64),
            velocity=np.asarray(velocity, dtype=np.float64),
            effort=np.zeros(0),
        )
    if msg.msgtype == FLOAT_ARRAY:
        layout = types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        return types[FLOAT_ARRAY](layout=layout, data=np.asarray(msg.value, dtype=np.float64))
    return types[msg.msgtype](data=msg.value)


def _joints(value) -> tuple[list, list]:
    """A JointState's positions and velocities (zeros unless given)."""
    if isinstance(value, dict):
        return value["position"], value.get("velocity", [0.0] * len(value["position"]))
    return value, [0.0] * len(value)


def _camera_info(types, time):
    fields = types[CAMERA_INFO].__dataclass_fields__
    values = {"header": _header(types, time), "height": 48, "width": 64}
    values["distortion_model"] = "plumb_bob"
    for name in fields:
        if name in values:
            continue
        if name in ("D", "d"):
            values[name] = np.zeros(5)
        elif name in ("K", "R", "k", "r"):
            values[name] = np.zeros(9)
        elif name in ("P", "p"):
            values[name] = np.zeros(12)
        elif name in ("binning_x", "binning_y"):
            values[name] = 0
        elif name == "roi":
            values[name] = types["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            )
    return types[CAMERA_INFO](**values)


def _header(types, time):
    fields = types["std_msgs/msg/Header"].__dataclass_fields__
    if "seq" in fields:  # ROS 1
        return types["std_msgs/msg/Header"](seq=0, stamp=time, frame_id="base")
    return types["std_msgs/msg/Header"](stamp=time, frame_id="base")


def write_ros2_bag(messages: list[Msg], folder: Path) -> Path:
    """A ROS 2 bag folder (metadata.yaml and sqlite3 storage)."""
    from rosbags.rosbag2 import Writer

    typestore = _typestore(2)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with Writer(folder, version=8) as writer:
        connections = {}
        for msg in messages:
            if msg.topic not in connections:
                connections[msg.topic] = writer.add_connection(
                    msg.topic, msg.msgtype, typestore=typestore
                )
            data = typestore.serialize_cdr(_message(typestore, msg), msg.msgtype)
            writer.write(connections[msg.topic], msg.t_ns, data)
    return folder


def write_ros1_bag(messages: list[Msg], path: Path) -> Path:
    from rosbags.rosbag1 import Writer

    typestore = _typestore(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with Writer(path) as writer:
        connections = {}
        for msg in messages:
            if msg.topic not in connections:
                connections[msg.topic] = writer.add_connection(
                    msg.topic, msg.msgtype, typestore=typestore
                )
            data = typestore.serialize_ros1(_message(typestore, msg), msg.msgtype)
            writer.write(connections[msg.topic], msg.t_ns, data)
    return path


def write_ros2_mcap(
    messages: list[Msg], path: Path, metadata: list[tuple[str, dict[str, str]]] = ()
) -> Path:
    """An MCAP file of ROS 2 messages (CDR), as ``ros2 bag record -s mcap`` writes them, with
    ``metadata`` records (name, map of strings) after the messages."""
    from mcap_ros2.writer import Writer

    typestore = _typestore(2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        writer = Writer(stream)
        schemas = {}
        protobuf = {}
        for msg in messages:
            if msg.msgtype == PROTOBUF_VIDEO:
                _write_protobuf(writer._writer, protobuf, msg)  # the MCAP writer inside
                continue
            if msg.msgtype not in schemas:
                text, _ = typestore.generate_msgdef(msg.msgtype, ros_version=2)
                schemas[msg.msgtype] = writer.register_msgdef(msg.msgtype, text)
            writer.write_message(
                msg.topic,
                schemas[msg.msgtype],
                _as_dict(msg),
                log_time=msg.t_ns,
                publish_time=msg.t_ns,
            )
        for name, data in metadata:
            writer.add_metadata(name, data)
        writer.finish()
    return path


def _write_protobuf(writer, channels: dict, msg: Msg) -> None:
    from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
    from mcap_protobuf.schema import register_schema

    if msg.topic not in channels:
        if "schema" not in channels:
            channels["schema"] = register_schema(writer, CompressedVideo)
        channels[msg.topic] = writer.register_channel(
            topic=msg.topic, message_encoding="protobuf", schema_id=channels["schema"]
        )
    fmt, data = msg.value
    message = CompressedVideo(frame_id="camera", format=fmt, data=data)
    message.timestamp.FromNanoseconds(msg.stamp)
    writer.add_message(
        channels[msg.topic],
        log_time=msg.t_ns,
        publish_time=msg.t_ns,
        data=message.SerializeToString(),
    )


def _as_dict(msg: Msg) -> dict:
    stamp = {"sec": msg.stamp // 10**9, "nanosec": msg.stamp % 10**9}
    header = {"stamp": stamp, "frame_id": "camera"}
    if msg.msgtype == IMAGE:
        width, height, encoding, pixels = msg.value
        step = width * (1 if encoding == "mono8" else 3)
        return {
            "header": header,
            "height": height,
            "width": width,
            "encoding": encoding,
            "is_bigendian": 0,
            "step": step,
            "data": bytes(pixels),
        }
    if msg.msgtype == COMPRESSED_IMAGE:
        fmt, data = msg.value
        return {"header": header, "format": fmt, "data": data}
    if msg.msgtype == COMPRESSED_VIDEO:
        fmt, data = msg.value
        return {"timestamp": stamp, "frame_id": "camera", "format": fmt, "data": data}
    if msg.msgtype == CAMERA_INFO:
        return {
            "header": header,
            "height": 48,
            "width": 64,
            "distortion_model": "plumb_bob",
            "d": [0.0] * 5,
            "k": [0.0] * 9,
            "r": [0.0] * 9,
            "p": [0.0] * 12,
            "binning_x": 0,
            "binning_y": 0,
            "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False},
        }
    if msg.msgtype == JOINT_STATE:
        position, velocity = _joints(msg.value)
        return {
            "header": {"stamp": stamp, "frame_id": "base"},
            "name": [f"joint{i}" for i in range(len(position))],
            "position": list(position),
            "velocity": list(velocity),
            "effort": [],
        }
    if msg.msgtype == FLOAT_ARRAY:
        return {"layout": {"dim": [], "data_offset": 0}, "data": list(msg.value)}
    return {"data": msg.value}


WRITERS = {
    "ros2-mcap": lambda messages, folder: write_ros2_mcap(messages, folder / "episode.mcap"),
    "ros2-bag": lambda messages, folder: write_ros2_bag(messages, folder / "episode"),
    "ros1-bag": lambda messages, folder: write_ros1_bag(messages, folder / "episode.bag"),
}


# -- cameras ---------------------------------------------------------------------------------

# The cameras of the camera logs: ``front`` logs H.264, ``wrist`` JPEG, both at 30 Hz from 10 ms
# before the first action, so step i (at T0 + i * 100 ms) shows frame 3i.
CAMERA_MAPPING = {
    "cameras": {
        "front": {"topic": "/camera/front/video", "max_age_s": 0.1},
        "wrist": "/camera/wrist/compressed",
    }
}
CAMERA_START = T0 - 10_000_000


def camera_log(
    steps: int = 20,
    *,
    front: list[bytes] | None = None,
    wrist: list[bytes] | None = None,
    **episode,
) -> list[Msg]:
    """An episode's messages with the two cameras of ``CAMERA_MAPPING`` (frames from
    ``tests/ingest/cameras.py`` unless given), in log-time order."""
    from tests.ingest.cameras import frame, h264, jpeg

    frames = [frame(i) for i in range(steps * 3 + 3)]
    front = h264(frames) if front is None else front
    wrist = [jpeg(f) for f in frames] if wrist is None else wrist
    messages = episode_messages(steps=steps, **episode)
    messages += camera_messages(
        "/camera/front/video",
        [(COMPRESSED_VIDEO, ("h264", unit)) for unit in front],
        start_ns=CAMERA_START,
    )
    messages += camera_messages(
        "/camera/wrist/compressed",
        [(COMPRESSED_IMAGE, ("jpeg", data)) for data in wrist],
        start_ns=CAMERA_START,
    )
    return sorted(messages, key=lambda m: m.t_ns)


def write_bad_camera_logs(folder: Path) -> dict[str, dict]:
    """Every kind of bad camera log, as ROS 2 MCAPs read with ``CAMERA_MAPPING``; returns file
    name -> what the reader must say: ``{"camera", "step", "fact", "fragment"}`` (the episode
    reads, and that camera's fact names the step) or ``{"error"}`` (a LogFormatError)."""
    from tests.ingest.cameras import frame, h264, jpeg

    folder.mkdir(parents=True, exist_ok=True)
    frames = [frame(i) for i in range(63)]
    units = h264(frames)
    jpegs = [jpeg(f) for f in frames]
    # Frame 30 is what step 10 shows.
    corrupt = list(jpegs)
    corrupt[30] = corrupt[30][:20] + bytes(range(256)) * 4
    write_ros2_mcap(camera_log(wrist=corrupt), folder / "corrupt-jpeg.mcap")
    truncated = list(units)
    truncated[30] = truncated[30][: len(truncated[30]) // 3]
    write_ros2_mcap(camera_log(front=truncated), folder / "truncated-h264.mcap")
    # The keyframe (and its SPS/PPS) is gone: the stream starts with a P-frame.
    write_ros2_mcap(camera_log(front=units[1:] + units[-1:]), folder / "no-keyframe.mcap")
    no_frames = [m for m in camera_log() if m.topic != "/camera/front/video"]
    write_ros2_mcap(no_frames, folder / "no-frames.mcap")
    bigger = jpegs[:30] + [jpeg(frame(i, 48, 36)) for i in range(30, 63)]
    write_ros2_mcap(camera_log(wrist=bigger), folder / "resolution-change.mcap")
    # Frame 31 is written (and stamped) before frame 30: the file goes back in time.
    log = camera_log()
    wrist = [i for i, m in enumerate(log) if m.topic == "/camera/wrist/compressed"]
    log[wrist[30]], log[wrist[31]] = log[wrist[31]], log[wrist[30]]
    write_ros2_mcap(log, folder / "out-of-order.mcap")
    info = [
        Msg("/camera/front/video", CAMERA_INFO, m.t_ns, None)
        if m.msgtype == COMPRESSED_VIDEO
        else m
        for m in camera_log()
    ]
    write_ros2_mcap(info, folder / "camera-info.mcap")
    return {
        "corrupt-jpeg.mcap": {
            "camera": "wrist",
            "step": 10,
            "fact": "decode_error",
            "fragment": "corrupt JPEG",
        },
        "truncated-h264.mcap": {
            "camera": "front",
            "step": 10,
            "fact": "decode_error",
            "fragment": "H.264",
        },
        "no-keyframe.mcap": {
            "camera": "front",
            "step": 0,
            "fact": "decode_error",
            "fragment": "keyframe",
        },
        "no-frames.mcap": {"camera": "front", "step": 0, "fact": "missing_steps", "fragment": ""},
        "resolution-change.mcap": {
            "camera": "wrist",
            "step": 10,
            "fact": "resolution_change",
            "fragment": "",
        },
        "out-of-order.mcap": {
            "camera": "wrist",
            "step": 11,
            "fact": "out_of_order",
            "fragment": "",
        },
        "camera-info.mcap": {"error": "camera front: camera topic /camera/front/video carries"},
    }
