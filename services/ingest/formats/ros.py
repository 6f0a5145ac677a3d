"""Episodes from ROS logs, mapped by the fleet's mapping file (``mapping.py``).

Three containers, one normalisation:

- MCAP with ROS 2 messages (CDR), decoded by ``mcap-ros2-support``; streamed in file order.
- ROS 2 bags (a folder with ``metadata.yaml`` and sqlite3 or MCAP storage) and ROS 1 ``.bag``
  files, read by ``rosbags`` in log-time order, with no ROS installation.

Only the mapped topics are decoded; other topics (``/tf``, diagnostics) are skipped unread. A
log with none of the mapped topics is refused with the topics it does have.

**Cameras.** The mapping's camera topics (``sensor_msgs/msg/Image`` in rgb8, bgr8 or mono8,
``sensor_msgs/msg/CompressedImage`` in JPEG or PNG, ``foxglove_msgs/msg/CompressedVideo`` in
H.264, and in MCAP also ``foxglove.CompressedVideo`` on protobuf channels) are spooled to disk
as they stream past (``camera_topics.py``), each frame at the mapping's clock (log time or its
``header.stamp``), and once the episodes are split each camera becomes one track per episode:
the latest frame at or before each control step, with the facts the validation suite judges.

**Alignment onto the control rate (zero-order hold).** Each action message is one control
step (or, with ``control_hz`` set, the steps are a fixed grid from the first action to the
last, holding the latest action). At each step the state is the latest state message logged
at or before it, and so is the control source; steps before the first state message are
dropped (the robot had not reported yet), and before the first control-source message the
policy is in control. Step times are kept in the order logged, so a clock that runs backwards
reaches the validation suite and is quarantined, not silently sorted.

**Episode boundaries and outcomes.** An outcome message ends an episode: the steps at or
before it form one episode with that outcome, the steps after it the next. Steps after the
last outcome (or a log with none) form an episode whose outcome is ``unknown``. The robot,
task, kind and policy version come from the latest episode-info message (a JSON string like
the MCAP contract's header) at or before an episode's first step, else the mapping's defaults.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from services.episodes.cameras import VideoFormat
from services.episodes.model import LogFormatError, RawEpisode, intervention_spans
from services.features import CONTROL_SOURCES, EPISODE_KINDS, OUTCOMES
from services.ingest.formats.camera_topics import CameraTopics
from services.ingest.formats.mcap_records import decoder, episode_metadata
from services.ingest.formats.ros_fields import (
    Codec,
    Payloads,
    bag_codec,
    decode_series,
    field_value,
    mcap_codec,
    open_bag,
    stamp,
)
from services.ingest.mapping import DEFAULT_CONTROL_SOURCE, FleetMapping, TopicField

# The message encoding of ROS 2 messages in an MCAP file.
MESSAGE_ENCODING = "cdr"
ROLES = ("state", "action", "control_source", "outcome", "episode")
# Facts of a metadata record that say who ran what (the rest: its outcome and span).
INFO_FIELDS = ("robot_id", "task", "kind", "policy_version", "operator_id", "episode_uuid")
# A metadata record without a start began before the log; one without an end ends after it.
NO_START, NO_END = np.iinfo(np.int64).min, np.iinfo(np.int64).max


# The roles whose fields are numbers, concatenated into one vector per message.
VECTOR_ROLES = ("state", "action")


@dataclass
class _Series:
    """One mapped topic's messages as they stream past: times (ns) and extracted values."""

    topic: TopicField
    times: list[int] = field(default_factory=list)
    # Per message, the mapped field's value; for state and action, the fields' values as the
    # decoder gave them (sequences), made one float array per series at the end, not per
    # message, or None where one of ``batches`` holds them (``ros_fields.decode_series``).
    values: list[Any] = field(default_factory=list)
    # State and action: the raw payloads, until the log has been read and they are decoded.
    payloads: Payloads | None = None
    # State and action: (message indices, one float array per field) decoded in batches.
    batches: list[tuple[np.ndarray, list[np.ndarray]]] = field(default_factory=list)
    # State and action: how many values each field has in the first message.
    sizes: tuple[int, ...] | None = None
    # State and action: one name per value, from the first message (``ros_fields.names``).
    names: tuple[str, ...] | None = None


class TopicCollector:
    """Extracts the mapped fields of each message, then aligns them into episodes."""

    def __init__(
        self,
        mapping: FleetMapping,
        directory: str | Path | None = None,
        video_format: VideoFormat | None = None,
    ) -> None:
        self.mapping = mapping
        self.cameras = CameraTopics(mapping.cameras, mapping.clock, directory, video_format)
        self.series = {
            role: _Series(topic)
            for role in ROLES
            if (topic := getattr(mapping.topics, role)) is not None
        }
        self.roles = {s.topic.topic: role for role, s in self.series.items()}
        self.seen: set[str] = set()
        # Episode facts from the log's metadata records (``mcap_records.episode_metadata``).
        self.metadata: list[dict[str, str]] = []

    def wants(self, topic: str) -> bool:
        self.seen.add(topic)
        return topic in self.roles or topic in self.cameras

    def close(self) -> None:
        self.cameras.close()

    def batches(self, topic: str) -> bool:
        """Whether a wanted topic's messages go to ``add_payload`` undecoded (state, action)."""
        return self.roles.get(topic) in VECTOR_ROLES

    def add_payload(self, topic: str, log_time_ns: int, data: bytes, codec: Codec) -> None:
        """A state or action message, kept raw until ``decode`` (or ``episodes``)."""
        series = self.series[self.roles[topic]]
        if series.payloads is None:
            series.payloads = Payloads()
        series.payloads.times.append(log_time_ns)
        series.payloads.data.append(data)
        series.payloads.codecs.append(codec)

    def add(self, topic: str, log_time_ns: int, message: Any) -> None:
        """A decoded message of a camera or of a topic that is not state or action."""
        if topic in self.cameras:
            self.cameras.add(topic, log_time_ns, message)
            return
        series = self.series[self.roles[topic]]
        header = self.mapping.clock == "header"
        series.times.append(stamp(message, log_time_ns) if header else log_time_ns)
        series.values.append(field_value(message, series.topic.fields[0], topic))

    def decode(self) -> None:
        """Decode the state and action payloads kept so far (``ros_fields.decode_series``);
        raises the error of the first message, in the order logged, that cannot be read."""
        for role in VECTOR_ROLES:
            series = self.series[role]
            if series.payloads is None:
                continue
            topic = series.topic
            header = self.mapping.clock == "header"
            decoded = decode_series(role, topic.topic, topic.fields, series.payloads, header)
            series.payloads = None
            series.times, series.values, series.batches = (
                decoded.times.tolist(),
                decoded.values,
                decoded.batches,
            )
            series.sizes, series.names = decoded.sizes, decoded.names

    def episodes(self) -> list[RawEpisode]:
        """The aligned episodes; raises LogFormatError when the log cannot make one."""
        self.decode()
        state, action = self.series["state"], self.series["action"]
        for role, series in (("state", state), ("action", action)):
            if not series.times:
                others = sorted(self.seen - set(self.roles)) or ["none"]
                raise LogFormatError(
                    f"no messages on the mapped {role} topic {series.topic.topic} (the log "
                    f"has {', '.join(others)}); check the fleet's mapping file"
                )
        ticks, actions = self._ticks(action)
        state_times, state_values = _sorted(state, _matrix(state))
        held = np.searchsorted(state_times, ticks, side="right") - 1
        keep = held >= 0  # before the first state message the robot had not reported yet
        ticks, actions, held = ticks[keep], actions[keep], held[keep]
        if not len(ticks):
            raise LogFormatError(
                f"zero-length episode: no action on {action.topic.topic} at or after the "
                f"first state on {state.topic.topic}"
            )
        states = state_values[held]
        sources = self._sources(ticks)
        outcomes, ends = self._outcomes()
        which = np.searchsorted(ends, ticks, side="left")
        result, steps = [], []
        for k in np.unique(which).tolist():
            rows = np.flatnonzero(which == k)
            outcome = outcomes[k] if k < len(outcomes) else "unknown"
            result.append(
                self._episode(ticks[rows], states[rows], actions[rows], sources[rows], outcome)
            )
            steps.append((ticks[rows], result[-1].control_hz))
        for raw, tracks in zip(result, self.cameras.tracks(steps), strict=True):
            raw.cameras = tracks
        return result

    def _ticks(self, action: _Series) -> tuple[np.ndarray, np.ndarray]:
        times = np.asarray(action.times, dtype=np.int64)
        values = _matrix(action)
        if self.mapping.control_hz is None:
            return times, values
        period = int(round(1e9 / self.mapping.control_hz))
        order = np.argsort(times, kind="stable")
        times, values = times[order], values[order]
        ticks = np.arange(times[0], times[-1] + 1, period, dtype=np.int64)
        return ticks, values[np.searchsorted(times, ticks, side="right") - 1]

    def _sources(self, ticks: np.ndarray) -> np.ndarray:
        series = self.series.get("control_source")
        if series is None or not series.times:
            return np.full(len(ticks), DEFAULT_CONTROL_SOURCE, dtype=object)
        times, values = _sorted(series)
        labels = np.asarray(
            # An unmapped value goes through as logged: the suite names it.
            [series.topic.label(v, CONTROL_SOURCES) or str(v) for v in values.tolist()],
            dtype=object,
        )
        held = np.searchsorted(times, ticks, side="right") - 1
        return np.where(held >= 0, labels[np.maximum(held, 0)], DEFAULT_CONTROL_SOURCE)

    def _outcomes(self) -> tuple[list[str], np.ndarray]:
        """Each episode's outcome and the time it ends at: from the outcome topic, or, in a
        log with no outcome message, from the metadata records (a record with no end covers
        the rest of the log)."""
        series = self.series.get("outcome")
        if series is None or not series.times:
            records = [m for m in self.metadata if "outcome" in m or "end_ns" in m]
            ends = [_ns(m, "end_ns", NO_END) for m in records]
            order = np.argsort(ends, kind="stable")
            labels = [records[i].get("outcome", "unknown") for i in order.tolist()]
            return labels, np.asarray(ends, dtype=np.int64)[order]
        times, values = _sorted(series)
        labels = []
        for value in values.tolist():
            label = series.topic.label(value, OUTCOMES)
            if label is None:
                raise LogFormatError(
                    f"outcome {value!r} on {series.topic.topic} is none of {OUTCOMES}; map it "
                    "under topics.outcome.values in the fleet's mapping file"
                )
            labels.append(label)
        return labels, times

    def _info(self, at: int) -> dict:
        """Who ran what: the episode-info topic's latest message at or before ``at``, over the
        latest metadata record starting at or before it, over the mapping's defaults."""
        info = dict(self.mapping.defaults)
        started = [m for m in self.metadata if _ns(m, "start_ns", NO_START) <= at]
        if started:
            latest = max(started, key=lambda m: _ns(m, "start_ns", NO_START))
            info.update({k: v for k, v in latest.items() if k in INFO_FIELDS})
        series = self.series.get("episode")
        if series is not None and series.times:
            times, values = _sorted(series)
            held = int(np.searchsorted(times, at, side="right")) - 1
            text = values[max(held, 0)]
            try:
                logged = json.loads(text)
            except (TypeError, json.JSONDecodeError) as exc:
                raise LogFormatError(
                    f"episode info on {series.topic.topic} is not a JSON object ({exc})"
                ) from exc
            if not isinstance(logged, dict):
                raise LogFormatError(f"episode info on {series.topic.topic} is not a JSON object")
            info.update({k: v for k, v in logged.items() if v is not None})
        missing = [k for k in ("robot_id", "task") if not info.get(k)]
        if missing:
            raise LogFormatError(
                f"the log does not say its {' and '.join(missing)}: log an episode-info message "
                "or set them under defaults in the fleet's mapping file"
            )
        kind = info.get("kind", "deployment")
        if kind not in EPISODE_KINDS:
            raise LogFormatError(f"episode info has unknown kind {kind!r}")
        return {**info, "kind": kind}

    def _episode(self, ticks, states, actions, sources, outcome) -> RawEpisode:
        info = self._info(int(ticks[0]))
        seconds = (ticks - ticks[0]) / 1e9
        rate = self.mapping.control_hz or info.get("control_hz")
        if rate is None:  # the median step; a clock that repeats or runs back is the suite's
            gaps = np.diff(ticks)
            positive = gaps[gaps > 0]
            rate = 1e9 / float(np.median(positive)) if len(positive) else 1.0
        sources = sources.tolist()
        kind = info["kind"]
        return RawEpisode(
            episode_uuid=str(info.get("episode_uuid") or ""),
            robot_id=str(info["robot_id"]),
            task=str(info["task"]),
            policy_version=info.get("policy_version"),
            kind=kind,
            operator_id=info.get("operator_id"),
            started_at=datetime.fromtimestamp(int(ticks[0]) / 1e9, tz=UTC),
            control_hz=float(rate),
            states=states.astype(np.float32),
            actions=actions.astype(np.float32),
            timestamps=seconds,
            control_source=sources,
            reasons=[None] * len(sources),
            outcome=outcome,
            interventions=[]
            if kind == "demo"
            else intervention_spans(sources, [None] * len(sources), [], info.get("operator_id")),
            state_names=self.series["state"].names,
            action_names=self.series["action"].names,
        )


def _ns(facts: dict[str, str], key: str, default: int) -> int:
    """A metadata record's start or end, in log-time nanoseconds."""
    if key not in facts:
        return default
    try:
        return int(facts[key])
    except ValueError:
        raise LogFormatError(
            f"metadata {key} {facts[key]!r} is not a time in nanoseconds"
        ) from None


def _sorted(series: _Series, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Times ascending (stable) with their values (the series' own as objects, unless given),
    for lookups of the latest at or before."""
    times = np.asarray(series.times, dtype=np.int64)
    order = np.argsort(times, kind="stable")
    if values is None:
        values = np.empty(len(series.values), dtype=object)
        values[:] = series.values
    return times[order], values[order]


def _not_numbers(topic: str, path: str, values: list, k: int) -> LogFormatError:
    """Why a field (the k-th) is not numbers, naming the first message that says so (messages
    decoded in batches hold numbers)."""
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            np.asarray(value[k], dtype=np.float64)
        except (TypeError, ValueError):
            return LogFormatError(
                f"{topic}: field {path!r} of message {i} is {type(value[k]).__name__}, not numbers"
            )
    return LogFormatError(f"{topic}: field {path!r} holds values that are not numbers")


def _matrix(series: _Series) -> np.ndarray:
    """A state or action series as one (messages, size) float64 array: each field converted
    once for all messages decoded one by one, beside its batches, the fields side by side."""
    rows = [i for i, value in enumerate(series.values) if value is not None]
    matrix = np.empty((len(series.values), sum(series.sizes or ())), dtype=np.float64)
    start = 0
    for k, (path, width) in enumerate(zip(series.topic.fields, series.sizes, strict=True)):
        column = [series.values[i][k] for i in rows]
        try:
            values = np.asarray(column, dtype=np.float64).reshape(len(rows), width)
        except (TypeError, ValueError) as exc:
            raise _not_numbers(series.topic.topic, path, series.values, k) from exc
        matrix[rows, start : start + width] = values
        for which, columns in series.batches:
            matrix[which, start : start + width] = columns[k]
        start += width
    return matrix


# -- the containers --------------------------------------------------------------------------


def episodes_from_ros2_mcap(
    messages: Iterable,
    mapping: FleetMapping,
    metadata: list | None = None,
    directory: str | Path | None = None,
    video_format: VideoFormat | None = None,
) -> list[RawEpisode]:
    """Episodes from an MCAP's ``(schema, channel, message)`` records with CDR payloads (and
    protobuf camera channels); ``metadata`` fills with the file's metadata records as the
    messages stream past. Camera tracks are written to ``directory`` (the system's temporary
    directory when None), encoded in ``video_format``."""
    decoders: dict[int, Any] = {}
    codecs: dict[int, Codec] = {}  # state and action channels: decoded in batches at the end
    collector = TopicCollector(mapping, directory, video_format)
    cameras = collector.cameras
    try:
        for schema, channel, message in messages:
            topic = channel.topic
            codec = codecs.get(channel.id)
            if codec is not None:
                collector.add_payload(topic, message.log_time, message.data, codec)
                continue
            if not collector.wants(topic):
                continue
            decode = decoders.get(channel.id)
            if decode is None:
                if topic in cameras:
                    cameras.check(topic, schema.name if schema else None)
                decode = decoders[channel.id] = decoder(channel, schema)
                if collector.batches(topic):
                    codec = codecs[channel.id] = mcap_codec(topic, schema, decode)
                    collector.add_payload(topic, message.log_time, message.data, codec)
                    continue
            try:
                decoded = decode(message.data)
            except Exception as exc:  # a message cut short or not of its schema
                if topic in cameras:  # one lost frame, which the suite names by its step
                    cameras.add_unreadable(topic, message.log_time, f"undecodable ({exc})")
                    continue
                raise LogFormatError(f"{topic}: undecodable message ({exc})") from exc
            collector.add(topic, message.log_time, decoded)
        collector.metadata = episode_metadata(metadata or [], mapping)
        return collector.episodes()
    finally:
        collector.close()


def read_rosbag(
    path: Path,
    mapping: FleetMapping,
    directory: str | Path | None = None,
    video_format: VideoFormat | None = None,
) -> list[RawEpisode]:
    """Episodes from a ROS 1 ``.bag`` file or a ROS 2 bag folder; camera tracks are written
    to ``directory`` (the system's temporary directory when None)."""
    collector = TopicCollector(mapping, directory, video_format)
    cameras = collector.cameras
    try:
        try:
            with open_bag(Path(path)) as reader:
                connections = [c for c in reader.connections if collector.wants(c.topic)]
                for connection in connections:
                    if connection.topic in cameras:
                        cameras.check(connection.topic, connection.msgtype)
                codecs = {
                    c.id: bag_codec(reader, c.msgtype)
                    for c in connections
                    if collector.batches(c.topic)
                }
                # No connections would mean every message to rosbags, not none.
                messages = reader.messages(connections=connections) if connections else ()
                for connection, timestamp, data in messages:
                    topic = connection.topic
                    codec = codecs.get(connection.id)
                    if codec is not None:
                        collector.add_payload(topic, timestamp, data, codec)
                        continue
                    try:
                        message = reader.deserialize(data, connection.msgtype)
                    except Exception as exc:  # rosbags raises its own error types
                        if topic not in cameras:
                            raise
                        cameras.add_unreadable(topic, timestamp, f"undecodable ({exc})")
                        continue
                    collector.add(topic, timestamp, message)
                collector.decode()  # rosbags' errors are this block's to word
        except LogFormatError:
            raise
        except Exception as exc:  # rosbags raises its own error types per container
            raise LogFormatError(f"unreadable bag ({type(exc).__name__}: {exc})") from exc
        return collector.episodes()
    finally:
        collector.close()
