"""Mapping files: YAML and TOML read alike; a mistake is refused naming the key."""

from __future__ import annotations

import pytest

from services.ingest.mapping import FleetMapping, MappingError, load_mapping

YAML = """
topics:
  state: {topic: /arm/joint_states, fields: [position, velocity]}
  action: /arm/command
  control_source: {topic: /teleop/engaged, values: {true: operator, false: policy}}
  outcome: null
clock: header
control_hz: 15
defaults: {robot_id: arm-01, task: wipe}
embodiments:
  - {name: ur5e, robots: ["arm-*"], state_dim: 12, action_dim: 6, action_range: [-1, 1],
     control_sources: [policy]}
robomimic: {obs_keys: [robot0_eef_pos], control_hz: 10}
"""

TOML = """
clock = "header"
control_hz = 15
[topics.state]
topic = "/arm/joint_states"
fields = ["position", "velocity"]
[topics.action]
topic = "/arm/command"
[topics.control_source]
topic = "/teleop/engaged"
values = { true = "operator", false = "policy" }
[defaults]
robot_id = "arm-01"
task = "wipe"
[[embodiments]]
name = "ur5e"
robots = ["arm-*"]
state_dim = 12
action_dim = 6
action_range = [-1, 1]
control_sources = ["policy"]
[robomimic]
obs_keys = ["robot0_eef_pos"]
control_hz = 10
"""


def test_yaml_and_toml_give_the_same_mapping(tmp_path):
    (tmp_path / "fleet.yaml").write_text(YAML)
    (tmp_path / "fleet.toml").write_text(TOML)  # TOML has no null: outcome left out
    yaml_mapping = load_mapping(tmp_path / "fleet.yaml")
    toml_mapping = load_mapping(tmp_path / "fleet.toml")
    assert yaml_mapping.topics.state.fields == ("position", "velocity")
    assert yaml_mapping.topics.action.fields == ("data",)
    assert yaml_mapping.topics.outcome is None  # this fleet does not log outcomes
    assert yaml_mapping.topics.control_source.values == {"true": "operator", "false": "policy"}
    [ur5e] = yaml_mapping.embodiments
    assert (ur5e.state_dim, ur5e.action_range, ur5e.control_sources) == (12, (-1, 1), ("policy",))
    assert (yaml_mapping.clock, yaml_mapping.control_hz, yaml_mapping.robomimic.control_hz) == (
        "header",
        15,
        10,
    )
    for field in (
        "topics.state",
        "topics.action",
        "topics.control_source",
        "embodiments",
        "defaults",
        "robomimic",
        "clock",
        "control_hz",
    ):
        head, *rest = field.split(".")
        a, b = getattr(yaml_mapping, head), getattr(toml_mapping, head)
        if rest:
            a, b = getattr(a, rest[0]), getattr(b, rest[0])
        assert a == b, field
    assert load_mapping(None) == FleetMapping()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("topic:\n  state: /x", "unknown section 'topic'; did you mean 'topics'?"),
        ("topics:\n  actions: /x", "unknown topic role 'actions'; did you mean 'action'?"),
        ("topics:\n  state: null", "topics.state is required"),
        ("topics:\n  state: joint_states", "topic 'joint_states' must start with '/'"),
        ("topics:\n  outcome: {topic: /r, values: {OK: won}}", "outcome values map to ['won']"),
        ("clock: wall", "clock must be one of ('log_time', 'header')"),
        ("embodiments:\n  - {name: a, state_dims: 3}", "did you mean 'state_dim'?"),
        ("embodiments:\n  - {name: a, control_sources: [robot]}", "control_sources must be"),
        ("embodiments:\n  - {name: a, state_range: [1, 0]}", "state_range has low above high"),
        ("embodiments:\n  - {name: a}\n  - {name: a}", "embodiment names repeat"),
        ("defaults: {robot: x}", "unknown defaults ['robot']"),
        ("topics: [", "cannot read mapping"),
    ],
)
def test_a_wrong_mapping_is_refused_saying_where(tmp_path, text, message):
    (tmp_path / "fleet.yaml").write_text(text)
    with pytest.raises(MappingError, match="fleet.yaml") as error:
        load_mapping(tmp_path / "fleet.yaml")
    assert message in str(error.value)
