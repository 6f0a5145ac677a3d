"""Read MCAP uploads in Flywheel's JSON topic contract (``contract.py``): one episode a file.

The file is streamed once, message by message in file order (``mcap_records.py``), so memory
holds the decoded episode and never the file. Anything that keeps the file from being one
well-formed episode raises ``LogFormatError`` with a reason a person can act on; the ingest
stage quarantines the file with it. Checks that compare episodes with each other (sizes per
task, NaN, clocks) are the validation suite's, run once per batch. An MCAP with ROS 2 messages
is ``ros.py``'s; ``services/ingest/readers.py`` picks the reader by the messages' encoding.

Cameras (``/flywheel/camera/<name>``, protobuf ``foxglove.CompressedVideo``) are spooled to
disk as they stream past and become one track per camera, a frame per step, aligned by log
time (or by the message's ``timestamp`` when the mapping's clock is ``header``; the steps are
then at ``started_at`` + ``t``). A frame that cannot be read is named by the step it would have
shown, not a reason to lose the episode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import datetime
from typing import BinaryIO

import numpy as np
import orjson
from mcap.records import Metadata

from services.episodes.cameras import CameraSpec, VideoFormat
from services.episodes.model import LogFormatError, RawEpisode, intervention_spans
from services.features import CONTROL_SOURCES, EPISODE_KINDS, OUTCOMES
from services.ingest.formats import contract
from services.ingest.formats.camera_topics import CameraTopics
from services.ingest.formats.mcap_records import decoder, file_metadata, opened, records
from services.ingest.mapping import FleetMapping

REQUIRED_HEADER = (
    "robot_id",
    "task",
    "kind",
    "started_at",
    "control_hz",
    "state_dim",
    "action_dim",
)


class _Steps:
    """Step messages accumulated as they stream past, checked against the header's sizes."""

    def __init__(self) -> None:
        self.states: list[list[float]] = []
        self.actions: list[list[float]] = []
        self.times: list[float] = []
        self.sources: list[str] = []
        self.reasons: list[str | None] = []
        # Each step message's log time (ns), for the cameras.
        self.log_times: list[int] = []

    def add(self, payload: dict, dims: tuple[int, int], log_time_ns: int) -> None:
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
        self.log_times.append(log_time_ns)


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


def read_episode_mcap(
    source: str | os.PathLike | BinaryIO | bytes, directory: str | os.PathLike | None = None
) -> RawEpisode:
    """Read one upload in Flywheel's JSON contract from a path, a binary stream (read once,
    never seeked) or bytes; camera tracks go to ``directory`` (None: the system's temporary
    directory)."""
    with opened(source) as stream:
        metadata: list[Metadata] = []
        topics: set[str] = set()
        return episode_from_json_mcap(
            records(stream, metadata, topics), FleetMapping(), metadata, directory, topics
        )


def episode_from_json_mcap(
    messages: Iterable[tuple],
    mapping: FleetMapping,
    metadata: list[Metadata],
    directory: str | os.PathLike | None = None,
    topics: set[str] | None = None,
    video_format: VideoFormat | None = None,
) -> RawEpisode:
    """The episode of an MCAP's ``(schema, channel, message)`` records in the JSON contract;
    ``metadata`` fills with the file's metadata records as the messages stream past, and
    ``topics`` (where given) with every channel's topic, so that a camera channel without a
    message is a camera with no frames. Camera tracks go to ``directory``."""
    specs = [c for c in mapping.cameras if c.topic.startswith(contract.CAMERA_PREFIX)]
    cameras = CameraTopics(specs, mapping.clock, directory, video_format)
    try:
        return _episode_from(
            messages, mapping, metadata, cameras, set() if topics is None else topics
        )
    finally:
        cameras.close()


def _episode_from(
    messages: Iterable[tuple],
    mapping: FleetMapping,
    metadata: list[Metadata],
    cameras: CameraTopics,
    topics: set[str],
) -> RawEpisode:
    payload: dict | None = None  # the header message as logged
    dims: tuple[int, int] | None = None
    steps = _Steps()
    spans: list[dict] = []
    outcome: dict | None = None
    others: set[str] = set()
    decoders: dict[int, object] = {}
    for schema, channel, message in messages:
        topic = channel.topic
        if topic.startswith(contract.CAMERA_PREFIX):
            _camera(cameras, decoders, schema, channel, message)
        elif topic == contract.STEP_TOPIC:
            dims = dims or _dims(payload, len(steps.states))
            steps.add(_decode(topic, message.data), dims, message.log_time)
        elif topic == contract.EPISODE_TOPIC:
            payload, dims = _decode(topic, message.data), None
        elif topic == contract.INTERVENTION_TOPIC:
            spans.append(_decode(topic, message.data))
        elif topic == contract.OUTCOME_TOPIC:
            outcome = _decode(topic, message.data)
        else:
            others.add(topic)
    if payload is None:
        unknown = f" (it has {', '.join(sorted(others))})" if others else ""
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
    raw = _episode(header, steps, spans, label)
    for topic in sorted(topics):
        if topic.startswith(contract.CAMERA_PREFIX) and topic not in cameras:
            _open_camera(cameras, topic)  # its channel, and not one frame
    if cameras.spools:
        [raw.cameras] = cameras.tracks(
            [(_step_times(steps, header, mapping.clock), raw.control_hz)]
        )
    return raw


def _camera(cameras: CameraTopics, decoders: dict, schema, channel, message) -> None:
    """One message on a camera topic, to its camera's spool."""
    topic = channel.topic
    decode = decoders.get(channel.id)
    if decode is None:
        if topic not in cameras:
            _open_camera(cameras, topic)
        cameras.check(topic, schema.name if schema else None)
        decode = decoders[channel.id] = decoder(channel, schema)
    try:
        decoded = decode(message.data)
    except Exception as exc:  # cut short, not of its schema: a frame lost, named by step
        cameras.add_unreadable(topic, message.log_time, f"undecodable ({exc})")
        return
    cameras.add(topic, message.log_time, decoded)


def _open_camera(cameras: CameraTopics, topic: str) -> None:
    try:
        cameras.open(CameraSpec(topic.removeprefix(contract.CAMERA_PREFIX), topic))
    except ValueError as exc:
        raise LogFormatError(f"camera topic {topic}: {exc}") from None


def _step_times(steps: _Steps, header: dict, clock: str) -> np.ndarray:
    """The steps' times (ns) on the cameras' clock: the step messages' log times, or with the
    ``header`` clock the episode's start plus each step's ``t`` (a step without one keeps its
    log time)."""
    log_times = np.asarray(steps.log_times, dtype=np.int64)
    if clock != "header":
        return log_times
    start_ns = int(header["started_at"].timestamp() * 1e9)
    t = np.asarray(steps.times, dtype=np.float64)
    known = np.isfinite(t) & (np.abs(t) < 1e7)
    at = start_ns + np.round(np.where(known, t, 0) * 1e9).astype(np.int64)
    return np.where(known, at, log_times)


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
