"""The data commands as a user runs them: ingest with a mapping file, quarantine reasons, export."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli import app
from tests.ingest.ros_logs import BOOL, FLOAT_ARRAY, JOINT_STATE, T0, Msg, write_ros1_bag

runner = CliRunner()

MAPPING = """
topics:
  state: {topic: /arm/joints, fields: [position]}
  action: /arm/command
  control_source: {topic: /teleop/engaged, values: {true: operator, false: policy}}
  outcome: null
  episode: null
defaults: {robot_id: arm-01, task: wipe}
embodiments:
  - {name: arm, state_dim: 3, action_dim: 2, action_range: [-1, 1]}
"""


def bag(path, steps=6, action=0.5):
    messages = [Msg("/teleop/engaged", BOOL, T0, False)]
    for i in range(steps):
        at = T0 + i * 100_000_000
        messages.append(Msg("/arm/joints", JOINT_STATE, at - 1, [0.1 * i] * 3))
        messages.append(Msg("/arm/command", FLOAT_ARRAY, at, [action, 0.0]))
    return write_ros1_bag(messages, path)


def test_ingest_with_a_mapping_lists_reasons_and_exports(settings, tmp_path):
    logs = tmp_path / "logs"
    bag(logs / "good.bag")
    bag(logs / "too-fast.bag", action=4.0)
    (logs / "cut.bag").write_bytes(b"#ROSBAG V2.0\n")
    (tmp_path / "fleet.yaml").write_text(MAPPING)

    result = runner.invoke(
        app, ["ingest", "--source", str(logs), "--mapping", str(tmp_path / "fleet.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "ingested 1, skipped 0, quarantined 2" in result.output

    shown = runner.invoke(app, ["episodes", "--status", "quarantined"], terminal_width=200)
    assert shown.exit_code == 0 and "2 quarantined episodes" in shown.output
    assert "action outside [-1, 1] of embodiment arm at 6 steps (0, 1, 2, 3, 4, ...)" in (
        shown.output
    )
    assert "cut.bag (rosbag1)" in shown.output and "unreadable bag" in shown.output
    listed = json.loads(runner.invoke(app, ["episodes", "--status", "ok", "--json"]).output)
    assert [(e["robot_id"], e["task"], e["steps"], e["outcome"]) for e in listed] == [
        ("arm-01", "wipe", 6, "unknown")
    ]

    exported = runner.invoke(app, ["export", str(tmp_path / "dataset"), "--json"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.output)["episodes"] == 1
    info = json.loads((tmp_path / "dataset/meta/info.json").read_text())
    assert info["features"]["observation.state"]["shape"] == [3]
    again = runner.invoke(app, ["export", str(tmp_path / "dataset")])
    assert again.exit_code == 1 and "is not empty" in again.output


def test_a_bad_mapping_file_is_refused_before_anything_runs(settings, tmp_path):
    (tmp_path / "fleet.yaml").write_text("topics:\n  stat: /x\n")
    result = runner.invoke(app, ["ingest", "--mapping", str(tmp_path / "fleet.yaml")])
    assert result.exit_code == 1
    assert "unknown topic role 'stat'; did you mean 'state'?" in result.output


def test_quarantined_logs_are_retried_once_the_mapping_is_fixed(settings, tmp_path):
    logs = tmp_path / "logs"
    bag(logs / "good.bag")
    mapping = tmp_path / "fleet.yaml"
    mapping.write_text(MAPPING.replace("/arm/command", "/arm/cmd"))  # a typo in the topic
    first = runner.invoke(app, ["ingest", "--source", str(logs), "--mapping", str(mapping)])
    assert "ingested 0, skipped 0, quarantined 1" in first.output
    [old] = json.loads(runner.invoke(app, ["episodes", "--status", "quarantined", "--json"]).output)
    assert "/arm/cmd" in old["reason"]

    mapping.write_text(MAPPING)
    args = ["ingest", "--source", str(logs), "--mapping", str(mapping)]
    assert "ingested 0, skipped 1" in runner.invoke(app, args).output
    retried = runner.invoke(app, [*args, "--retry-quarantined"])

    assert retried.exit_code == 0, retried.output
    assert "ingested 1, skipped 0, quarantined 0" in retried.output
    history = runner.invoke(app, ["audit", "--subject", old["id"], "--json"])
    actions = [(h["action"], h["reason"]) for h in json.loads(history.output)]
    assert actions == [("retry-quarantined", old["reason"]), ("quarantine", old["reason"])]
