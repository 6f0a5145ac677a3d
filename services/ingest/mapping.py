"""A fleet's mapping file: how its logs map onto Flywheel's episode features, without code.

A real fleet's ROS bags carry its own topic names and message types. One YAML (or TOML) file
per fleet says which topic and which fields of its messages become ``observation.state``,
``action``, the control source and the outcome; which embodiments it has (the validation
suites' parameters); and how to read imported robomimic demonstrations. Every key is optional;
the defaults are Flywheel's ROS topic contract (see ``docs/ingest.md``)::

    topics:
      state:   {topic: /joint_states, fields: [position]}            # sensor_msgs/JointState
      action:  {topic: /arm_controller/commands, fields: [data]}     # std_msgs/Float64MultiArray
      control_source:                                                 # std_msgs/Bool
        {topic: /teleop/engaged, fields: [data], values: {"true": operator, "false": policy}}
      outcome:                                                        # std_msgs/String
        {topic: /task/result, fields: [data], values: {SUCCEEDED: success, FAILED: failure}}
      episode: {topic: /flywheel/episode_info, fields: [data]}        # JSON like the MCAP header
    clock: log_time          # or header: a message's header.stamp where it has one
    control_hz: null         # null: one control step per action message; else a fixed grid
    defaults: {robot_id: arm-01, task: bin-pick, kind: deployment}
    embodiments:
      - {name: ur5e, robots: ["arm-*"], state_dim: 6, action_dim: 6,
         action_range: [-3.2, 3.2], control_sources: [policy, operator], min_steps: 10,
         cameras: {front: {width: 640, height: 480, encoding: jpeg}}, max_black_fraction: 0}
    robomimic: {obs_keys: [robot0_eef_pos, robot0_gripper_qpos], control_hz: 20,
                image_keys: [agentview_image]}                        # cameras; null: all
    metadata:                # MCAP metadata records with episode facts (null: read none)
      {name: episode, keys: {robot_id: robot, outcome: result}, values: {SUCCEEDED: success}}
    cameras:                 # each becomes the feature observation.images.<name>
      front: {topic: /camera/front/image_raw, max_age_s: 0.1, frozen_s: 2.0}
      wrist: /camera/wrist/compressed                                 # defaults for the rest

A field path is dotted (``twist.linear.x``); the fields of one topic are concatenated in
order into one float vector.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.episodes.cameras import CameraSpec
from services.features import CONTROL_POLICY, CONTROL_SOURCES, OUTCOMES
from services.ingest.formats import contract
from services.validation.embodiment import CameraDeclaration, Embodiment

CLOCKS = ("log_time", "header")
# Control source before the first control-source message: the policy drives unless told.
DEFAULT_CONTROL_SOURCE = CONTROL_POLICY


@dataclass(frozen=True)
class TopicField:
    topic: str
    # Dotted paths into the message; numbers and number arrays are concatenated in this order.
    fields: tuple[str, ...] = ("data",)
    # For labels (control source, outcome): the logged value, as text, to Flywheel's label.
    values: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.topic.startswith("/"):
            raise ValueError(f"topic {self.topic!r} must start with '/'")
        if not self.fields:
            raise ValueError(f"topic {self.topic}: give at least one field")

    def label(self, value: Any, allowed: tuple[str, ...]) -> str | None:
        """The Flywheel label for a logged value, or None if it has none."""
        text = str(value).lower() if isinstance(value, bool) else str(value)
        label = self.values.get(text, text if not self.values else None)
        return label if label in allowed else None


@dataclass(frozen=True)
class Topics:
    # Defaults: Flywheel's ROS topic contract (docs/ingest.md).
    state: TopicField = TopicField("/joint_states", ("position",))
    action: TopicField = TopicField("/flywheel/action")
    control_source: TopicField | None = TopicField("/flywheel/control_source")
    outcome: TopicField | None = TopicField("/flywheel/outcome")
    episode: TopicField | None = TopicField("/flywheel/episode_info")

    def __post_init__(self) -> None:
        if self.control_source is not None:
            _check_values(self.control_source, CONTROL_SOURCES, "control_source")
        if self.outcome is not None:
            _check_values(self.outcome, OUTCOMES, "outcome")


def _check_values(topic: TopicField, allowed: tuple[str, ...], role: str) -> None:
    wrong = sorted(v for v in topic.values.values() if v not in allowed)
    if wrong:
        raise ValueError(f"{role} values map to {wrong}; each must be one of {allowed}")


# Episode facts an MCAP metadata record may hold, besides the outcome and the episode's span.
METADATA_FIELDS = (
    "robot_id",
    "task",
    "kind",
    "policy_version",
    "operator_id",
    "episode_uuid",
    "outcome",
    "start_ns",
    "end_ns",
)


@dataclass(frozen=True)
class Metadata:
    """Which MCAP metadata records describe episodes, and what their keys are called.

    Each record of this name is one episode's facts; ``start_ns``/``end_ns`` (log time, ns)
    bound the episode in a log of several, and a record without them covers the whole log.
    The log's topics win over a record, and a record over the mapping's defaults.
    """

    # The records' name (MCAP metadata records are named maps of strings).
    name: str = contract.METADATA_NAME
    # Flywheel field -> the record's key for it, where the fleet's name differs.
    keys: Mapping[str, str] = field(default_factory=dict)
    # The record's outcome values, as written, to Flywheel's outcomes (identity when empty).
    values: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.keys) - set(METADATA_FIELDS))
        if unknown:
            raise ValueError(
                f"metadata.keys names unknown fields {unknown}; known: {METADATA_FIELDS}"
            )
        wrong = sorted(v for v in self.values.values() if v not in OUTCOMES)
        if wrong:
            raise ValueError(
                f"metadata outcome values map to {wrong}; each must be one of {OUTCOMES}"
            )

    def fields(self, record: Mapping[str, str]) -> dict[str, str]:
        """The Flywheel fields of one record that has them (empty values count as unsaid)."""
        found = {f: record.get(self.keys.get(f, f)) for f in METADATA_FIELDS}
        return {f: v for f, v in found.items() if v not in (None, "")}


@dataclass(frozen=True)
class Robomimic:
    # Low-dimensional observation keys under data/demo_N/obs, concatenated into
    # observation.state; empty: every 1-D-per-step key, in name order.
    obs_keys: tuple[str, ...] = ()
    # robosuite's default control rate.
    control_hz: float = 20.0
    # Image observation keys, (T, H, W, 3) uint8, each a camera named without its ``_image``
    # (agentview_image -> agentview); None: every obs key ending in ``_image`` with 4
    # dimensions; empty: no cameras.
    image_keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.control_hz < float("inf"):
            raise ValueError(f"robomimic control_hz must be positive, not {self.control_hz}")
        for key in self.image_keys or ():
            CameraSpec(robomimic_camera(key), f"/obs/{key}")  # refuses a name it cannot take
        if self.image_keys and len(set(self.image_keys)) != len(self.image_keys):
            raise ValueError(f"robomimic image_keys repeat: {list(self.image_keys)}")


def robomimic_camera(key: str) -> str:
    """The camera an image observation key names: agentview_image -> agentview."""
    return key.removesuffix("_image")


@dataclass(frozen=True)
class FleetMapping:
    topics: Topics = field(default_factory=Topics)
    # Time of a message: when it was logged, or the header stamp of messages with one.
    clock: str = "log_time"
    # None: one control step per action message. A rate: steps on a fixed grid at that rate.
    control_hz: float | None = None
    # Episode facts the log does not carry (robot_id, task, kind, policy_version, operator_id).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    embodiments: tuple[Embodiment, ...] = ()
    robomimic: Robomimic = field(default_factory=Robomimic)
    # MCAP metadata records with episode facts; None: the fleet's records are not read.
    metadata: Metadata | None = field(default_factory=Metadata)
    # The fleet's cameras (sensor_msgs Image/CompressedImage, foxglove CompressedVideo topics).
    cameras: tuple[CameraSpec, ...] = ()

    def __post_init__(self) -> None:
        topics = [c.topic for c in self.cameras]
        if len(topics) != len(set(topics)):
            raise ValueError(f"two cameras share a topic: {topics}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, not {self.clock!r}")
        if self.control_hz is not None and not 0 < self.control_hz < float("inf"):
            raise ValueError(f"control_hz must be positive, not {self.control_hz}")
        names = [e.name for e in self.embodiments]
        if len(names) != len(set(names)):
            raise ValueError(f"embodiment names repeat: {names}")
        unknown = set(self.defaults) - set(DEFAULT_KEYS)
        if unknown:
            raise ValueError(f"unknown defaults {sorted(unknown)}; known: {DEFAULT_KEYS}")


DEFAULT_KEYS = ("robot_id", "task", "kind", "policy_version", "operator_id")
_SECTIONS = (
    "topics",
    "clock",
    "control_hz",
    "defaults",
    "embodiments",
    "robomimic",
    "metadata",
    "cameras",
)
# Sections a fleet may try that Flywheel does not read yet, and what to do instead.
_OUT_OF_SCOPE = {
    "depth": "depth cameras are out of scope for now; list colour cameras under cameras",
    "camera_info": "camera calibration (CameraInfo) is out of scope for now",
}
_CAMERA_KEYS = ("topic", "max_age_s", "frozen_s", "type")
_TOPIC_ROLES = ("state", "action", "control_source", "outcome", "episode")


class MappingError(ValueError):
    """The mapping file is not valid; the message names the key."""


def load_mapping(path: str | Path | None) -> FleetMapping:
    """The mapping in a YAML or TOML file; Flywheel's topic contract when ``path`` is None."""
    if path is None:
        return FleetMapping()
    path = Path(path)
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise MappingError(f"cannot read mapping {path}: {exc}") from exc
    try:
        return parse_mapping(raw or {})
    except (TypeError, ValueError) as exc:
        raise MappingError(f"mapping {path}: {exc}") from exc


def _robomimic(raw: Mapping[str, Any]) -> Robomimic:
    values = dict(raw)
    for key in ("obs_keys", "image_keys"):
        if values.get(key) is None:
            continue
        if isinstance(values[key], str):  # tuple() would split the name into letters
            raise ValueError(f"robomimic {key} must be a list of keys, not {values[key]!r}")
        values[key] = tuple(values[key])
    return Robomimic(**values)


def parse_mapping(raw: Mapping[str, Any]) -> FleetMapping:
    if not isinstance(raw, Mapping):
        raise ValueError("the file must hold a mapping of sections")
    for key, why in _OUT_OF_SCOPE.items():
        if key in raw:
            raise ValueError(f"section {key!r}: {why}")
    _known(raw, _SECTIONS, "section")
    topics = raw.get("topics") or {}
    _known(topics, _TOPIC_ROLES, "topic role")
    return FleetMapping(
        topics=Topics(**{role: _topic(value, role) for role, value in topics.items()}),
        clock=raw.get("clock", "log_time"),
        control_hz=raw.get("control_hz"),
        defaults=dict(raw.get("defaults") or {}),
        embodiments=tuple(_embodiment(e) for e in raw.get("embodiments") or ()),
        robomimic=_robomimic(raw.get("robomimic") or {}),
        metadata=_metadata(raw["metadata"]) if "metadata" in raw else Metadata(),
        cameras=tuple(_camera(name, value) for name, value in (raw.get("cameras") or {}).items()),
    )


def _camera(name: str, raw: Any) -> CameraSpec:
    if isinstance(raw, str):
        raw = {"topic": raw}
    if not isinstance(raw, Mapping):
        raise ValueError(f"cameras.{name} must be a topic or a mapping with a topic")
    _known(raw, _CAMERA_KEYS, f"key of cameras.{name}")
    kind = raw.get("type", "rgb")
    if kind in ("depth", "camera_info"):
        raise ValueError(f"cameras.{name}: {_OUT_OF_SCOPE[kind]}")
    if kind != "rgb":
        raise ValueError(f"cameras.{name}: type {kind!r} is not known; Flywheel reads rgb")
    if "topic" not in raw:
        raise ValueError(f"cameras.{name} needs a topic")
    values = {k: v for k, v in raw.items() if k != "type"}
    return CameraSpec(name=str(name), **values)


def _metadata(raw: Any) -> Metadata | None:
    if raw is None:  # `metadata: null`: this fleet's metadata records say nothing to Flywheel
        return None
    _known(raw, ("name", "keys", "values"), "key of metadata")
    keys = dict(raw.get("keys") or {})
    _known(keys, METADATA_FIELDS, "field of metadata.keys")
    return Metadata(
        name=str(raw.get("name", Metadata.name)),
        keys={k: str(v) for k, v in keys.items()},
        values={str(k): v for k, v in (raw.get("values") or {}).items()},
    )


def _known(raw: Mapping, known: tuple[str, ...], what: str) -> None:
    for key in raw:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise ValueError(f"unknown {what} {key!r}{hint}")


def _topic(raw: Any, role: str) -> TopicField | None:
    if raw is None:  # `outcome: null` says the fleet does not log it
        if role in ("state", "action"):
            raise ValueError(f"topics.{role} is required")
        return None
    if isinstance(raw, str):
        raw = {"topic": raw}
    _known(raw, ("topic", "fields", "field", "values"), f"key of topics.{role}")
    fields = raw.get("fields") or raw.get("field") or ("data",)
    # YAML reads `true:` as a boolean key; labels match on the logged value's text.
    values = {
        str(k).lower() if isinstance(k, bool) else str(k): v
        for k, v in (raw.get("values") or {}).items()
    }
    if "topic" not in raw:
        raise ValueError(f"topics.{role} needs a topic")
    return TopicField(
        topic=raw["topic"],
        fields=(fields,) if isinstance(fields, str) else tuple(fields),
        values=values,
    )


def _embodiment(raw: Mapping[str, Any]) -> Embodiment:
    known = tuple(Embodiment.__dataclass_fields__)
    _known(raw, known, "embodiment key")
    values = dict(raw)
    for key in ("robots", "tasks", "control_sources"):
        if key in values:
            values[key] = (values[key],) if isinstance(values[key], str) else tuple(values[key])
    for key in ("state_range", "action_range"):
        if values.get(key) is not None:
            values[key] = tuple(tuple(b) if isinstance(b, list) else b for b in values[key])
    cameras = values.get("cameras") or {}
    if not isinstance(cameras, Mapping):
        raise ValueError("an embodiment's cameras must map names to {width, height, encoding}")
    values["cameras"] = tuple(_declared_camera(name, value) for name, value in cameras.items())
    return Embodiment(**values)


def _declared_camera(name: str, raw: Any) -> CameraDeclaration:
    if not isinstance(raw, Mapping):
        raise ValueError(f"embodiment camera {name} must be a mapping of width, height, encoding")
    _known(raw, ("width", "height", "encoding"), f"key of embodiment camera {name}")
    return CameraDeclaration(name=str(name), **raw)
