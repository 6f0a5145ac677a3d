"""Read MCAP uploads: Flywheel's JSON topic contract (``contract.py``), or ROS 2 (``ros.py``).

The file is streamed once, message by message in file order, so memory holds the decoded
episode and never the file. Anything that keeps the file from being one well-formed episode
raises ``LogFormatError`` with a reason a person can act on; the ingest stage quarantines the
file with it. Checks that compare episodes with each other (sizes per task, NaN, clocks) are
the validation suite's, run once per batch.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

import numpy as np
import orjson
from mcap.exceptions import EndOfFile, InvalidMagic, McapError
from mcap.records import Channel, Message, Metadata, Schema
from mcap.stream_reader import StreamReader

from services.features import CONTROL_OPERATOR, CONTROL_SOURCES, EPISODE_KINDS, OUTCOMES
from services.fleetlogs import contract
from services.fleetlogs.mapping import FleetMapping
from services.fleetlogs.mcap_writer import EpisodeRecording, InterventionSpan

# A corrupt record length must not make the reader allocate gigabytes; the writer's chunks
# are about 1 MiB, and no record of an episode log comes near this.
RECORD_SIZE_LIMIT = 256 * 2**20
MCAP_MAGIC = b"\x89MCAP0\r\n"
REQUIRED_HEADER = (
    "robot_id",
    "task",
    "kind",
    "started_at",
    "control_hz",
    "state_dim",
    "action_dim",
)


class LogFormatError(ValueError):
    """The file is not a readable episode; the message says why."""


@dataclass
class RawEpisode(EpisodeRecording):
    """An upload read back: what the robot recorded, with the step times it logged."""

    # (T,) float64 seconds since the start, as logged (the writer derives them from the rate).
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.timestamps) != len(self.states):
            raise ValueError("timestamps and states differ in length")

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def steps(self) -> int:
        return len(self.states)

    @property
    def duration_s(self) -> float:
        return float(self.timestamps[-1] + 1.0 / self.control_hz) if self.steps else 0.0


class _Steps:
    """Step messages accumulated as they stream past, checked against the header's sizes."""

    def __init__(self) -> None:
        self.states: list[list[float]] = []
        self.actions: list[list[float]] = []
        self.times: list[float] = []
        self.sources: list[str] = []
        self.reasons: list[str | None] = []

    def add(self, payload: dict, dims: tuple[int, int]) -> None:
        i = len(self.times)
        state, action = payload.get("state"), payload.get("action")
        source = payload.get("control_source")
        # One test for the common case, a step that is fine; _refuse says what is wrong.
        if not (
            payload.get("step", i) == i
            and type(state) is list
            and len(state) == dims[0]
            and type(action) is list
            and len(action) == dims[1]
            and source in CONTROL_SOURCES
        ):
            _refuse(payload, dims, i)
        t = payload.get("t")
        self.states.append(state)
        self.actions.append(action)
        # A missing clock becomes NaN here and is reported by the validation suite.
        self.times.append(float(t) if isinstance(t, int | float) else float("nan"))
        self.sources.append(source)
        self.reasons.append(payload.get("reason"))


def _refuse(payload: dict, dims: tuple[int, int], i: int) -> None:
    """Raise why step ``i`` cannot be part of the episode."""
    if payload.get("step", i) != i:
        raise LogFormatError(
            f"steps missing or out of order: expected step {i}, got {payload.get('step')!r}"
        )
    for key, dim in zip(("state", "action"), dims, strict=True):
        values = payload.get(key)
        if not isinstance(values, list) or len(values) != dim:
            size = len(values) if isinstance(values, list) else "no"
            raise LogFormatError(f"step {i}: {key} has {size} values, header says {dim}")
    raise LogFormatError(f"step {i}: unknown control source {payload.get('control_source')!r}")


def read_episode_mcap(source: str | os.PathLike | BinaryIO | bytes) -> RawEpisode:
    """Read one upload in Flywheel's JSON contract from a path, a binary stream (read once,
    never seeked) or bytes."""
    with _opened(source) as stream:
        metadata: list[Metadata] = []
        return _contract_episode(_records(stream, metadata), metadata, FleetMapping())


def read_mcap(
    source: str | os.PathLike | BinaryIO | bytes, mapping: FleetMapping | None = None
) -> list[RawEpisode]:
    """The episodes of any MCAP upload: Flywheel's JSON contract (one episode), or ROS 2
    messages mapped by the fleet's ``mapping`` (see ``ros.py``; its outcomes split episodes).

    The message encoding of the first message decides; the file is streamed once.
    """
    from services.fleetlogs.ros import episodes_from_ros2_mcap

    mapping = mapping or FleetMapping()
    with _opened(source) as stream:
        # Metadata records may come anywhere (writers put them at the end): the readers
        # look at them once every message has streamed past.
        metadata: list[Metadata] = []
        records = _records(stream, metadata)
        first = next(records, None)
        if first is None:
            raise LogFormatError("no messages: the MCAP file is empty of data")
        records = itertools.chain([first], records)
        if first[1].message_encoding == contract.MESSAGE_ENCODING:
            return [_contract_episode(records, metadata, mapping)]
        if first[1].message_encoding == "cdr":
            return episodes_from_ros2_mcap(records, mapping, metadata)
        raise LogFormatError(
            f"message encoding {first[1].message_encoding!r} on {first[1].topic}: Flywheel reads "
            "its JSON contract and ROS 2 (cdr)"
        )


@contextmanager
def _opened(source: str | os.PathLike | BinaryIO | bytes) -> Iterator[BinaryIO]:
    if isinstance(source, bytes | bytearray):
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as stream:
            yield stream
    else:
        yield source


def _records(stream: BinaryIO, metadata: list[Metadata]) -> Iterator[tuple]:
    """``(schema, channel, message)`` in file order, appending each metadata record to
    ``metadata`` as it passes; damage raises LogFormatError.

    One pass over the stream for both: mcap's ``NonSeekingReader`` answers one query per
    stream (``iter_messages`` or ``iter_metadata``), so this walks its records the same way.
    """
    magic = stream.read(len(MCAP_MAGIC))
    if not magic:
        raise LogFormatError("empty file")
    if magic != MCAP_MAGIC:
        raise LogFormatError("not an MCAP file (bad magic bytes)")
    reader = StreamReader(
        stream, skip_magic=True, validate_crcs=True, record_size_limit=RECORD_SIZE_LIMIT
    )
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    try:
        # File order, not log-time order: sorting would hold every message in memory.
        for record in reader.records:
            if isinstance(record, Message):
                channel = channels.get(record.channel_id)
                if channel is None:
                    raise McapError(f"no channel record found with id {record.channel_id}")
                yield schemas.get(channel.schema_id), channel, record
            elif isinstance(record, Channel):
                if record.schema_id != 0 and record.schema_id not in schemas:
                    raise McapError(f"no schema record found with id {record.schema_id}")
                channels[record.id] = record
            elif isinstance(record, Schema):
                schemas[record.id] = record
            elif isinstance(record, Metadata):
                metadata.append(record)
    except LogFormatError:
        raise
    except InvalidMagic as exc:  # the opening magic was fine: this is the closing one
        raise LogFormatError("corrupt MCAP: bad magic bytes at the end of the file") from exc
    except EndOfFile as exc:
        size = _position(stream)
        where = f"after {size} bytes" if size is not None else "early"
        raise LogFormatError(f"truncated MCAP: the file ends {where}") from exc
    except (McapError, struct.error, zlib.error, ValueError, KeyError) as exc:
        raise LogFormatError(f"truncated or corrupt MCAP ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # zstd/lz4 raise their own types on a damaged chunk
        raise LogFormatError(f"corrupt MCAP ({type(exc).__name__}: {exc})") from exc


def _contract_episode(
    records: Iterable[tuple], metadata: list[Metadata], mapping: FleetMapping
) -> RawEpisode:
    payload: dict | None = None  # the header message as logged
    dims: tuple[int, int] | None = None
    steps = _Steps()
    spans: list[dict] = []
    outcome: dict | None = None
    topics: set[str] = set()
    for _, channel, message in records:
        topic = channel.topic
        if topic == contract.STEP_TOPIC:
            dims = dims or _dims(payload, len(steps.states))
            steps.add(_decode(topic, message.data), dims)
        elif topic == contract.EPISODE_TOPIC:
            payload, dims = _decode(topic, message.data), None
        elif topic == contract.INTERVENTION_TOPIC:
            spans.append(_decode(topic, message.data))
        elif topic == contract.OUTCOME_TOPIC:
            outcome = _decode(topic, message.data)
        else:
            topics.add(topic)
    if payload is None:
        unknown = f" (it has {', '.join(sorted(topics))})" if topics else ""
        raise LogFormatError(
            f"no {contract.EPISODE_TOPIC} message: not a Flywheel episode log{unknown}"
        )
    # The header message wins; the file's metadata record fills in what it leaves out.
    facts = file_metadata(metadata, mapping)
    header = _header({**facts, **{k: v for k, v in payload.items() if v is not None}})
    if not steps.states:
        raise LogFormatError("zero-length episode: no steps")
    label = outcome.get("outcome") if outcome is not None else facts.get("outcome")
    if label is None:
        raise LogFormatError(
            f"no {contract.OUTCOME_TOPIC} message and no outcome in the file's metadata: the "
            "upload is incomplete"
        )
    if label not in OUTCOMES:
        raise LogFormatError(f"unknown outcome {label!r}")
    return _episode(header, steps, spans, label)


def episode_metadata(metadata: list[Metadata], mapping: FleetMapping) -> list[dict[str, str]]:
    """The episode facts of the log's metadata records named as the mapping says, in file
    order, with outcomes translated to Flywheel's; [] when the mapping reads none."""
    config = mapping.metadata
    if config is None:
        return []
    result = []
    for record in metadata:
        if record.name != config.name:
            continue
        facts = config.fields(record.metadata)
        if "outcome" in facts and config.values:
            facts["outcome"] = config.values.get(facts["outcome"], facts["outcome"])
        if facts.get("outcome", OUTCOMES[0]) not in OUTCOMES:
            raise LogFormatError(
                f"outcome {facts['outcome']!r} in metadata record {record.name!r} is none of "
                f"{OUTCOMES}; map it under metadata.values in the fleet's mapping file"
            )
        result.append(facts)
    return result


def file_metadata(metadata: list[Metadata], mapping: FleetMapping) -> dict[str, str]:
    """Every record's facts merged, a later record's over an earlier's (one episode a file)."""
    merged: dict[str, str] = {}
    for facts in episode_metadata(metadata, mapping):
        merged.update(facts)
    return merged


def _position(stream: BinaryIO) -> int | None:
    """How far into the stream the reader got, where the stream can say."""
    try:
        return stream.tell()
    except (AttributeError, OSError, ValueError):
        return None


def _decode(topic: str, data: bytes) -> dict:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        # orjson is strict JSON; Python's json.dumps, which robots use too, writes NaN and
        # Infinity as bare words: those are read here, and the suite reports the values.
        try:
            payload = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LogFormatError(f"{topic}: message is not JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise LogFormatError(f"{topic}: message is not a JSON object")
    return payload


def _dims(payload: dict | None, step: int) -> tuple[int, int]:
    """The sizes the steps are checked against as they stream: the header message's own."""
    if payload is None:
        raise LogFormatError(f"step {step} comes before the {contract.EPISODE_TOPIC} header")
    missing = [key for key in ("state_dim", "action_dim") if payload.get(key) is None]
    if missing:
        raise LogFormatError(f"episode header is incomplete: missing {', '.join(missing)}")
    try:
        return int(payload["state_dim"]), int(payload["action_dim"])
    except (TypeError, ValueError) as exc:
        raise LogFormatError(f"episode header is malformed: {exc}") from exc


def _header(payload: dict) -> dict:
    missing = [key for key in REQUIRED_HEADER if payload.get(key) is None]
    if missing:
        raise LogFormatError(f"episode header is incomplete: missing {', '.join(missing)}")
    try:
        started_at = datetime.fromisoformat(payload["started_at"])
        state_dim, action_dim = int(payload["state_dim"]), int(payload["action_dim"])
        control_hz = float(payload["control_hz"])
    except (TypeError, ValueError) as exc:
        raise LogFormatError(f"episode header is malformed: {exc}") from exc
    if started_at.tzinfo is None:
        raise LogFormatError("episode header started_at has no time zone")
    if payload["kind"] not in EPISODE_KINDS:
        raise LogFormatError(f"episode header has unknown kind {payload['kind']!r}")
    if not (state_dim > 0 and action_dim > 0 and 0 < control_hz < float("inf")):
        raise LogFormatError(
            f"episode header has impossible sizes or rate (state_dim={state_dim}, "
            f"action_dim={action_dim}, control_hz={control_hz})"
        )
    return {
        **payload,
        "started_at": started_at,
        "state_dim": state_dim,
        "action_dim": action_dim,
        "control_hz": control_hz,
    }


def _episode(header: dict, steps: _Steps, spans: list[dict], outcome: str) -> RawEpisode:
    kind = header["kind"]
    try:  # the store keeps float32 like LeRobot
        states = np.array(steps.states, dtype=np.float32)
        actions = np.array(steps.actions, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise LogFormatError(
            f"a step's state or action holds something that is not a number ({exc})"
        ) from exc
    return RawEpisode(
        episode_uuid=str(header.get("episode_uuid") or ""),
        robot_id=str(header["robot_id"]),
        task=str(header["task"]),
        policy_version=header.get("policy_version"),
        kind=kind,
        operator_id=header.get("operator_id"),
        started_at=header["started_at"],
        control_hz=header["control_hz"],
        states=states,
        actions=actions,
        timestamps=np.asarray(steps.times, dtype=np.float64),
        control_source=steps.sources,
        reasons=steps.reasons,
        outcome=outcome,
        # In a demo the operator drives throughout: that is a demonstration, not an intervention.
        interventions=[]
        if kind == "demo"
        else intervention_spans(steps.sources, steps.reasons, spans, header.get("operator_id")),
    )


def intervention_spans(
    sources: Sequence[str],
    reasons: Sequence[str | None],
    spans: list[dict],
    operator_id: str | None,
) -> list[InterventionSpan]:
    """Spans from who was in control (authoritative), described by the robot's messages."""
    declared = {s.get("start_step"): s for s in spans}
    operator = np.asarray(sources) == CONTROL_OPERATOR
    edges = np.flatnonzero(np.diff(np.r_[False, operator, False].astype(np.int8)))
    result = []
    for start, end in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        meta = declared.get(start, {})
        kind = meta.get("kind")
        result.append(
            InterventionSpan(
                start_step=start,
                end_step=end,
                kind=kind if kind in contract.INTERVENTION_KINDS else "takeover",
                operator_id=meta.get("operator_id") or operator_id,
                reason=meta.get("reason") or reasons[start],
            )
        )
    return result
