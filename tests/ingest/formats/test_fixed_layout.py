"""ROS messages decoded in batches give exactly what the reference decoders give, message by
message: in both byte orders, in CDR and ROS 1, where the layout changes mid-topic, and a
payload cut short fails as it did."""

from __future__ import annotations

import numpy as np
import pytest
from mcap.records import Channel, Schema
from mcap.writer import Writer
from rosbags.typesys import Stores, get_typestore

from services.episodes.model import LogFormatError
from services.ingest.formats.fixed_layout import ros2msg_type, rosbags_type
from services.ingest.formats.mcap_records import decoder
from services.ingest.formats.ros import read_rosbag
from services.ingest.formats.ros_fields import Codec, Payloads, decode_series
from services.ingest.mapping import parse_mapping
from tests.ingest.ros_logs import JOINT_STATE, WRITERS, Msg, episode_messages

PATHS = ("position", "velocity")
# The serialisations and decoders: (typestore, CDR or ROS 1, little-endian, decoder).
KINDS = {
    "rosbags cdr le": (Stores.ROS2_HUMBLE, True, True, "rosbags"),
    "rosbags cdr be": (Stores.ROS2_HUMBLE, True, False, "rosbags"),
    "rosbags ros1": (Stores.ROS1_NOETIC, False, True, "rosbags"),
    "mcap-ros2 le": (Stores.ROS2_HUMBLE, True, True, "mcap"),
    "mcap-ros2 be": (Stores.ROS2_HUMBLE, True, False, "mcap"),
}


def joint_states(typestore, n: int = 40) -> list:
    """JointStates of 6 joints whose layout changes mid-topic: another frame id (same
    length), fewer velocities, reordered names, and back to the first layout."""
    types, rng = typestore.types, np.random.default_rng(0)
    messages = []
    for i in range(n):
        names = [f"j{k}" for k in range(6)]
        velocity = rng.normal(size=6)
        frame = "base"
        if 10 <= i < 13:
            frame = "tool"
        if i == 20:
            velocity = velocity[:3]
        if i == 25:
            names = names[::-1]
        header_fields = {"stamp": types["builtin_interfaces/msg/Time"](sec=i, nanosec=7 * i)}
        header_fields["frame_id"] = frame
        if "seq" in types["std_msgs/msg/Header"].__dataclass_fields__:
            header_fields["seq"] = i
        messages.append(
            types[JOINT_STATE](
                header=types["std_msgs/msg/Header"](**header_fields),
                name=names,
                position=rng.normal(size=6),
                velocity=velocity,
                effort=np.zeros(0),
            )
        )
    return messages


def codecs(kind: str) -> tuple[list[bytes], Codec, Codec]:
    """Payloads of ``joint_states``, the reference codec and the batching one."""
    store, cdr, little, which = KINDS[kind]
    typestore = get_typestore(store)
    messages = joint_states(typestore)
    if cdr:
        data = [
            bytes(typestore.serialize_cdr(m, JOINT_STATE, little_endian=little)) for m in messages
        ]
    else:
        data = [bytes(typestore.serialize_ros1(m, JOINT_STATE)) for m in messages]
    if which == "mcap":
        text, _ = typestore.generate_msgdef(JOINT_STATE, ros_version=2)
        schema = Schema(id=1, name=JOINT_STATE, encoding="ros2msg", data=text.encode())
        channel = Channel(id=1, schema_id=1, topic="/j", message_encoding="cdr", metadata={})
        decode = decoder(channel, schema)
        message = ros2msg_type(JOINT_STATE, text)
    else:
        deserialize = typestore.deserialize_cdr if cdr else typestore.deserialize_ros1
        decode = lambda payload: deserialize(payload, JOINT_STATE)  # noqa: E731
        message = rosbags_type(typestore, JOINT_STATE)
    return data, Codec(decode, None, cdr), Codec(decode, message, cdr)


def matrix(decoded) -> np.ndarray:
    """Every message's values, per field side by side, from wherever they were decoded."""
    columns = []
    for k, width in enumerate(decoded.sizes):
        column = np.full((len(decoded.values), width), np.nan)
        for i, value in enumerate(decoded.values):
            if value is not None:
                column[i] = np.asarray(value[k], dtype=np.float64)
        for which, batch in decoded.batches:
            column[which] = batch[k]
        columns.append(column)
    return np.concatenate(columns, axis=1)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_batches_equal_the_reference_decoder_message_by_message(kind):
    data, reference, batching = codecs(kind)
    # position only: the messages with three velocities keep the size but not the layout
    mapped = ("position",)
    expected = decode_series(
        "state", "/j", mapped, Payloads([0] * 40, data, [reference] * 40), True
    )
    got = decode_series("state", "/j", mapped, Payloads([0] * 40, data, [batching] * 40), True)

    np.testing.assert_array_equal(matrix(got), matrix(expected))
    np.testing.assert_array_equal(got.times, expected.times)
    assert got.times[5] == 5 * 10**9 + 35  # the header clock, read from the batch
    assert (got.sizes, got.names) == (expected.sizes, expected.names)
    # the batch took every message of the first layout; the reference decoder the rest
    one_by_one = [i for i, value in enumerate(got.values) if value is not None]
    assert one_by_one == [0, 10, 11, 12, 20, 25]
    # a size that changes mid-topic is refused as before, naming the message
    with pytest.raises(
        LogFormatError, match="state message 20 on /j has 9 values, the first had 12"
    ):
        decode_series("state", "/j", PATHS, Payloads([0] * 40, data, [batching] * 40), False)


@pytest.mark.parametrize("container", sorted(WRITERS))
def test_a_log_whose_layout_changes_mid_topic_reads_as_written(container, tmp_path):
    """Joint states whose velocity count changes mid-topic, read on the header clock."""
    messages = episode_messages(steps=12, state_every=1)
    states = [i for i, m in enumerate(messages) if m.topic == "/joint_states"]
    for k in states[4:7]:
        m = messages[k]
        messages[k] = Msg(m.topic, m.msgtype, m.t_ns, {"position": m.value, "velocity": [1.0]})
    path = WRITERS[container](messages, tmp_path)
    mapping = parse_mapping({"clock": "header"})
    [raw] = read_rosbag(path, mapping) if container != "ros2-mcap" else _read_mcap(path, mapping)
    written = [m.value for m in messages if m.topic == "/joint_states"]
    positions = [v["position"] if isinstance(v, dict) else v for v in written]
    np.testing.assert_array_equal(raw.states, np.asarray(positions, dtype=np.float32))


def _read_mcap(path, mapping):
    from services.ingest.readers import read_mcap

    return read_mcap(path, mapping)


@pytest.mark.parametrize("container", sorted(WRITERS))
def test_a_payload_cut_short_mid_topic_says_why_as_before(container, tmp_path):
    messages = [m for m in episode_messages(steps=6) if m.topic != "/flywheel/control_source"]
    at = [i for i, m in enumerate(messages) if m.topic == "/joint_states"][9]
    path = WRITERS[container](messages, tmp_path / "whole")
    cut = _cut(container, path, tmp_path / "cut", messages[at].t_ns)
    expected = (
        "/joint_states: undecodable message" if container == "ros2-mcap" else "unreadable bag"
    )
    with pytest.raises(LogFormatError, match=expected):
        _read_mcap(cut, None) if container == "ros2-mcap" else read_rosbag(cut, parse_mapping({}))


def _cut(container: str, path, out, t_ns: int):
    """The log with the payload logged at ``t_ns`` on /joint_states cut to half its bytes."""
    if container == "ros2-mcap":
        from mcap.reader import make_reader

        out.mkdir()
        target = out / "episode.mcap"
        with open(path, "rb") as source, open(target, "wb") as stream:
            writer, channels = Writer(stream), {}
            writer.start()
            for schema, channel, message in make_reader(source).iter_messages():
                if channel.id not in channels:
                    sid = writer.register_schema(schema.name, schema.encoding, schema.data)
                    channels[channel.id] = writer.register_channel(channel.topic, "cdr", sid)
                data = message.data
                if channel.topic == "/joint_states" and message.log_time == t_ns:
                    data = data[: len(data) // 2]
                writer.add_message(channels[channel.id], message.log_time, data, message.log_time)
            writer.finish()
        return target
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag1 import Writer as Writer1
    from rosbags.rosbag2 import Writer as Writer2

    target = out / ("episode.bag" if container == "ros1-bag" else "episode")
    out.mkdir()
    with AnyReader([path]) as reader:
        writer = Writer1(target) if container == "ros1-bag" else Writer2(target, version=8)
        with writer:
            connections = {}
            for connection, timestamp, data in reader.messages():
                if connection.id not in connections:
                    connections[connection.id] = writer.add_connection(
                        connection.topic, connection.msgtype, typestore=reader.typestore
                    )
                if connection.topic == "/joint_states" and timestamp == t_ns:
                    data = data[: len(data) // 2]
                writer.write(connections[connection.id], timestamp, data)
    return target
