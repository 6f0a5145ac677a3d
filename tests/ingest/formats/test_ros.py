"""ROS logs: ROS 2 MCAP, ROS 2 sqlite3 bags and ROS 1 bags read the same, aligned and split."""

from __future__ import annotations

import io

import numpy as np
import pytest
from mcap.writer import Writer

from services.episodes.model import LogFormatError
from services.ingest.formats.ros import read_rosbag
from services.ingest.mapping import FleetMapping, parse_mapping
from services.ingest.readers import read_mcap
from tests.ingest.ros_logs import (
    BOOL,
    FLOAT_ARRAY,
    INT32,
    JOINT_STATE,
    STRING,
    T0,
    WRITERS,
    Msg,
    episode_messages,
)

CONTAINERS = sorted(WRITERS)


def read(container: str, messages: list[Msg], folder, mapping: FleetMapping | None = None):
    path = WRITERS[container](messages, folder)
    if container == "ros2-mcap":
        return read_mcap(path, mapping)
    return read_rosbag(path, mapping or FleetMapping())


@pytest.mark.parametrize("container", CONTAINERS)
def test_a_ros_log_reads_as_one_episode_aligned_on_the_actions(container, tmp_path):
    messages = episode_messages(steps=20, state_every=3)
    [raw] = read(container, messages, tmp_path)

    assert (raw.robot_id, raw.task, raw.policy_version, raw.kind, raw.outcome) == (
        "arm-01",
        "bin-pick",
        "7",
        "deployment",
        "success",
    )
    assert raw.steps == 20 and raw.control_hz == 10.0
    # the JointState names the state's values; the action's are named by their field
    assert raw.state_names == (
        "joint0.position",
        "joint1.position",
        "joint2.position",
        "joint3.position",
    )
    assert raw.action_names == ("data.0", "data.1")
    np.testing.assert_allclose(raw.timestamps, np.arange(20) / 10)
    actions = [m.value for m in messages if m.topic == "/flywheel/action"]
    np.testing.assert_allclose(raw.actions, np.asarray(actions, dtype=np.float32))
    # zero-order hold: each step takes the latest state at or before it (3 per step, the
    # first of each trio 1 ms before the action)
    states = [m for m in messages if m.topic == "/joint_states"]
    np.testing.assert_allclose(raw.states, np.asarray([s.value for s in states[::3]], np.float32))
    assert raw.control_source[4:10] == ["policy"] + ["operator"] * 4 + ["policy"]
    [span] = raw.interventions
    assert (span.start_step, span.end_step, span.kind) == (5, 9, "takeover")


@pytest.mark.parametrize("container", CONTAINERS)
def test_outcome_messages_end_episodes(container, tmp_path):
    first = episode_messages(steps=6, outcome="failure", operator_steps=range(0))
    second = episode_messages(
        steps=8, start_ns=T0 + 10**9, outcome=None, info={"robot_id": "arm-02", "task": "stack"}
    )
    episodes = read(container, first + second, tmp_path)
    assert [(e.steps, e.outcome, e.robot_id, e.task) for e in episodes] == [
        (6, "failure", "arm-01", "bin-pick"),
        (8, "unknown", "arm-02", "stack"),
    ]
    assert episodes[1].timestamps[0] == 0.0 and episodes[1].started_at.second == 1


MAPPING = {
    "topics": {
        "state": {"topic": "/arm/joints", "fields": ["position", "velocity"]},
        "action": {"topic": "/arm/command"},
        "control_source": {
            "topic": "/teleop/engaged",
            "values": {True: "operator", False: "policy"},
        },
        "outcome": {
            "topic": "/task/result",
            "values": {"SUCCEEDED": "success", "ABORTED": "aborted"},
        },
        "episode": None,
    },
    "control_hz": 5,
    "defaults": {"robot_id": "arm-77", "task": "wipe", "policy_version": "12"},
}


def fleet_messages(outcome="ABORTED") -> list[Msg]:
    period = 100_000_000  # actions at 10 Hz, resampled to the mapping's 5 Hz
    messages = [Msg("/teleop/engaged", BOOL, T0, False), Msg("/diagnostics", INT32, T0, 3)]
    for i in range(10):
        messages.append(Msg("/arm/joints", JOINT_STATE, T0 + i * period - 10, [float(i)] * 2))
        messages.append(Msg("/arm/command", FLOAT_ARRAY, T0 + i * period, [float(i), -1.0]))
    messages.append(Msg("/teleop/engaged", BOOL, T0 + 4 * period - 5, True))
    messages.append(Msg("/task/result", STRING, T0 + 9 * period + 1, outcome))
    return sorted(messages, key=lambda m: m.t_ns)


@pytest.mark.parametrize("container", CONTAINERS)
def test_a_mapping_file_maps_a_fleets_own_topics(container, tmp_path):
    [raw] = read(container, fleet_messages(), tmp_path, parse_mapping(MAPPING))
    assert (raw.robot_id, raw.task, raw.policy_version, raw.outcome) == (
        "arm-77",
        "wipe",
        "12",
        "aborted",
    )
    assert raw.control_hz == 5.0 and raw.steps == 5
    np.testing.assert_allclose(raw.timestamps, [0.0, 0.2, 0.4, 0.6, 0.8])
    # state: position then velocity (JointState's velocity is zeros here), held per step
    np.testing.assert_allclose(raw.states, [[i, i, 0, 0] for i in (0, 2, 4, 6, 8)])
    np.testing.assert_allclose(raw.actions[:, 0], [0, 2, 4, 6, 8])
    assert raw.control_source == ["policy", "policy", "operator", "operator", "operator"]


@pytest.mark.parametrize("container", CONTAINERS)
def test_broken_ros_logs_say_why(container, tmp_path):
    def refused(messages, match, mapping=None, name="x"):
        with pytest.raises(LogFormatError, match=match):
            read(container, messages, tmp_path / name, mapping)

    unknown = [Msg("/camera/info", STRING, T0, "x"), Msg("/tf", INT32, T0 + 1, 1)]
    refused(
        unknown,
        r"no messages on the mapped state topic /joint_states \(the log has "
        r"/camera/info, /tf\)",
        name="unknown",
    )
    ragged = episode_messages(steps=5)
    at = next(i for i, m in enumerate(ragged) if m.topic == "/flywheel/action" and m.t_ns > T0)
    ragged[at] = Msg("/flywheel/action", FLOAT_ARRAY, ragged[at].t_ns, [1.0, 2.0, 3.0])
    refused(
        ragged, "action message 1 on /flywheel/action has 3 values, the first had 2", name="ragged"
    )
    refused(
        fleet_messages(outcome="EXPLODED"),
        r"outcome 'EXPLODED' on /task/result is none",
        parse_mapping(MAPPING),
        name="outcome",
    )
    refused(episode_messages(info=None), "does not say its robot_id and task", name="anon")
    late = [m for m in episode_messages(steps=3) if m.topic != "/joint_states"]
    late.append(Msg("/joint_states", JOINT_STATE, T0 + 10**9, [0.0] * 4))
    refused(late, "zero-length episode", name="late")
    wrong_field = parse_mapping(
        {"topics": {"state": {"topic": "/joint_states", "fields": ["pos"]}}}
    )
    refused(
        episode_messages(),
        "/joint_states: its messages have no field 'pos'",
        wrong_field,
        name="field",
    )
    names = parse_mapping({"topics": {"state": {"topic": "/joint_states", "fields": ["name"]}}})
    refused(
        episode_messages(),
        "/joint_states: field 'name' of message 0 is list, not numbers",
        names,
        name="names",
    )


def test_a_ros2_mcap_that_cannot_be_decoded_says_why():
    def log(schema_encoding: str, schema: bytes) -> bytes:
        out = io.BytesIO()
        writer = Writer(out)
        writer.start()
        schema_id = writer.register_schema(
            name="sensor_msgs/msg/JointState", encoding=schema_encoding, data=schema
        )
        channel = writer.register_channel("/joint_states", "cdr", schema_id)
        writer.add_message(channel, T0, b"\x00\x01\x00\x00cut", T0)
        writer.finish()
        return out.getvalue()

    cases = [
        (log("ros2msg", b"this is not a message definition"), "cannot decode its schema"),
        (log("protobuf", b"\x0a\x01x"), "schema encoding 'protobuf': Flywheel decodes ROS 2"),
        (log("ros2msg", b"float64[] position"), "/joint_states: undecodable message"),
    ]
    for data, match in cases:
        with pytest.raises(LogFormatError, match=match):
            read_mcap(data)


def test_a_clock_that_runs_backwards_reaches_the_suite(tmp_path):
    messages = episode_messages(steps=5)
    actions = [i for i, m in enumerate(messages) if m.topic == "/flywheel/action"]
    # file order kept: the fourth action is stamped before the third
    m = messages[actions[3]]
    messages[actions[3]] = Msg(m.topic, m.msgtype, m.t_ns - 150_000_000, m.value)
    [raw] = read("ros2-mcap", messages, tmp_path)
    assert np.diff(raw.timestamps)[2] < 0
