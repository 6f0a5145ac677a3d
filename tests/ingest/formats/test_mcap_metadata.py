"""MCAP metadata records: episode facts a log carries beside its messages. The topics win
over a record, a record over the mapping's defaults; records may bound several episodes."""

from __future__ import annotations

import pytest
from mcap.reader import make_reader

from services.episodes.model import LogFormatError
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.ingest.mapping import FleetMapping, parse_mapping
from services.ingest.readers import read_mcap
from tests.ingest.logs import HEADER, recording, step, write_raw
from tests.ingest.ros_logs import T0, episode_messages, write_ros2_mcap

STEPS = [step(i) for i in range(12)]


def test_the_simulated_fleet_writes_the_episode_facts_as_a_metadata_record(tmp_path):
    path = write_episode_mcap(recording(n=12, outcome="failure"), tmp_path / "e.mcap")
    with open(path, "rb") as stream:
        [record] = make_reader(stream).iter_metadata()
    assert record.name == "flywheel.episode"
    assert {k: record.metadata[k] for k in ("robot_id", "task", "outcome", "kind")} == {
        "robot_id": "robot-00",
        "task": "toy-reach",
        "outcome": "failure",
        "kind": "deployment",
    }
    assert int(record.metadata["end_ns"]) - int(record.metadata["start_ns"]) == 12 * 10**8


def test_an_upload_without_an_outcome_message_takes_the_outcome_from_its_metadata(tmp_path):
    path = write_raw(tmp_path / "e.mcap", STEPS, outcome=False, metadata={"outcome": "aborted"})
    [raw] = read_mcap(path)
    assert raw.outcome == "aborted"
    bare = write_raw(tmp_path / "bare.mcap", STEPS, outcome=False)
    with pytest.raises(LogFormatError, match="no outcome in the file's metadata"):
        read_mcap(bare)


def test_the_header_message_wins_and_the_metadata_fills_in_what_it_leaves_out(tmp_path):
    header = {k: v for k, v in HEADER.items() if k != "robot_id"}
    facts = {"robot_id": "robot-42", "task": "other-task", "outcome": "success"}
    path = write_raw(tmp_path / "e.mcap", STEPS, header=header, metadata=facts)
    [raw] = read_mcap(path)
    # robot from the record; task from the header; outcome from the outcome message (failure)
    assert (raw.robot_id, raw.task, raw.outcome) == ("robot-42", "toy-reach", "failure")


def test_metadata_null_in_the_mapping_reads_no_records(tmp_path):
    path = write_raw(tmp_path / "e.mcap", STEPS, outcome=False, metadata={"outcome": "success"})
    with pytest.raises(LogFormatError, match="no /flywheel/outcome message"):
        read_mcap(path, parse_mapping({"metadata": None}))


FLEET = {
    "metadata": {
        "name": "episode",
        "keys": {"robot_id": "robot", "outcome": "result", "start_ns": "t0", "end_ns": "t1"},
        "values": {"SUCCEEDED": "success", "FAILED": "failure"},
    },
    "defaults": {"task": "bin-pick"},
}


def _two_episodes(tmp_path, outcome: str | None):
    """One ROS 2 MCAP, 20 steps at 10 Hz, no info topic; two records each bound half of it."""
    messages = episode_messages(steps=20, outcome=outcome, info=None)
    middle = T0 + 10 * 100_000_000 - 1  # just before step 10
    records = [
        ("episode", {"robot": "arm-07", "result": "SUCCEEDED", "t1": str(middle)}),
        ("episode", {"robot": "arm-08", "result": "FAILED", "t0": str(middle + 1)}),
        ("rosbag2", {"serialized_metadata": "ignored"}),
    ]
    return write_ros2_mcap(messages, tmp_path / "bag.mcap", metadata=records)


def test_metadata_records_bound_and_label_the_episodes_of_a_ros_log(tmp_path):
    first, second = read_mcap(_two_episodes(tmp_path, outcome=None), parse_mapping(FLEET))
    assert (first.steps, first.robot_id, first.task, first.outcome) == (
        10,
        "arm-07",
        "bin-pick",
        "success",
    )
    assert (second.steps, second.robot_id, second.outcome) == (10, "arm-08", "failure")


def test_outcome_messages_win_over_the_records_boundaries(tmp_path):
    [whole] = read_mcap(_two_episodes(tmp_path, outcome="aborted"), parse_mapping(FLEET))
    # the topic's one outcome ends the one episode; the record starting before it names the robot
    assert (whole.steps, whole.outcome, whole.robot_id) == (20, "aborted", "arm-07")


def test_an_unmapped_metadata_outcome_is_refused_with_the_key_to_set(tmp_path):
    mapping = parse_mapping({**FLEET, "metadata": {**FLEET["metadata"], "values": {}}})
    with pytest.raises(LogFormatError, match="metadata.values"):
        read_mcap(_two_episodes(tmp_path, outcome=None), mapping)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"keys": {"robot": "r"}}, "did you mean 'robot_id'"),
        ({"nmae": "x"}, "did you mean 'name'"),
        ({"values": {"OK": "great"}}, "must be one of"),
    ],
)
def test_a_wrong_metadata_section_is_refused(section, message):
    with pytest.raises(ValueError, match=message):
        parse_mapping({"metadata": section})


def test_the_default_mapping_reads_flywheels_own_record():
    assert FleetMapping().metadata.name == "flywheel.episode"
