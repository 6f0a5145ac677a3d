"""Write one episode as an MCAP file in Flywheel's topic contract (see ``contract.py``).

This is what a robot (or the simulated fleet) runs to upload an episode. The file is written
to a temporary name and renamed, so the log store never shows a half-written upload.

**Cameras.** ``write_episode_mcap(recording, path, cameras={"front": frames, ...})`` writes
each camera on ``/flywheel/camera/<name>`` as protobuf ``foxglove.CompressedVideo``, where
``frames`` is an iterable of ``(t, access_unit)``: ``t`` the frame's time in seconds since the
episode's start (the log time is ``started_at`` + ``t``, like the steps'), ``access_unit`` one
H.264 Annex B access unit (no B-frames; the first a keyframe carrying its SPS/PPS). The frames
are consumed as they are written, so a generator keeps memory flat. A recorder that has RGB
frames encodes them as it renders with ``H264Encoder``::

    encoder = H264Encoder(width=96, height=96, fps=30)
    front = [(t, encoder.encode(rgb)) for t, rgb in rendered]   # (H, W, 3) uint8
    encoder.close()
    write_episode_mcap(recording, path, cameras={"front": front})

or, for frames already in hand, ``h264_frames(((t, rgb), ...), fps)``, a generator of the same
pairs. Each camera's frames must be in time order; the reader aligns the latest frame at or
before each step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
from mcap.writer import CompressionType, Writer
from mcap_protobuf.schema import build_file_descriptor_set

from services.episodes.codec_pass import H264Encoder
from services.episodes.model import EpisodeRecording
from services.ingest.formats import contract

# Frames of one camera: (seconds since the episode's start, one H.264 Annex B access unit).
CameraFrames = Iterable[tuple[float, bytes]]


def h264_frames(frames: Iterable[tuple[float, np.ndarray]], fps: float = 30.0) -> Iterator:
    """``(t, RGB frame)`` pairs as ``(t, access unit)`` pairs, encoded as they are consumed."""
    encoder: H264Encoder | None = None
    try:
        for t, frame in frames:
            if encoder is None:
                encoder = H264Encoder(frame.shape[1], frame.shape[0], fps)
            yield t, encoder.encode(frame)
    finally:
        if encoder is not None:
            encoder.close()


def write_episode_mcap(
    recording: EpisodeRecording,
    path: Path,
    cameras: Mapping[str, CameraFrames] | None = None,
) -> Path:
    """Write ``recording`` to ``path`` atomically, with each of ``cameras`` (name -> frames,
    see the module's docstring) on its contract topic; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    start_ns = int(recording.started_at.timestamp() * 1e9)
    period_ns = int(1e9 / recording.control_hz)
    with open(tmp, "wb") as stream:
        writer = Writer(stream, compression=CompressionType.ZSTD)
        writer.start(profile="flywheel", library="flywheel")
        channels = {}
        for topic, (schema_name, schema) in contract.SCHEMAS.items():
            schema_id = writer.register_schema(
                name=schema_name,
                encoding=contract.SCHEMA_ENCODING,
                data=json.dumps(schema).encode(),
            )
            channels[topic] = writer.register_channel(
                topic=topic, message_encoding=contract.MESSAGE_ENCODING, schema_id=schema_id
            )

        def emit(topic: str, payload: dict, at_ns: int) -> None:
            writer.add_message(
                channels[topic],
                log_time=at_ns,
                publish_time=at_ns,
                data=json.dumps(payload).encode(),
            )

        # Who and what the episode is: in the episode message and in the metadata record.
        identity = {
            "episode_uuid": recording.episode_uuid,
            "robot_id": recording.robot_id,
            "task": recording.task,
            "policy_version": recording.policy_version,
            "kind": recording.kind,
            "operator_id": recording.operator_id,
        }
        emit(
            contract.EPISODE_TOPIC,
            {
                **identity,
                "started_at": recording.started_at.isoformat(),
                "control_hz": recording.control_hz,
                "state_dim": int(recording.states.shape[1]),
                "action_dim": int(recording.actions.shape[1]),
            },
            start_ns,
        )
        states = np.asarray(recording.states, dtype=np.float64).tolist()
        actions = np.asarray(recording.actions, dtype=np.float64).tolist()
        for step, (state, action, source, reason) in enumerate(
            zip(states, actions, recording.control_source, recording.reasons, strict=True)
        ):
            emit(
                contract.STEP_TOPIC,
                {
                    "step": step,
                    "t": step * period_ns / 1e9,
                    "state": state,
                    "action": action,
                    "control_source": source,
                    "reason": reason,
                },
                start_ns + step * period_ns,
            )
        end_ns = start_ns + len(states) * period_ns
        for span in recording.interventions:
            emit(
                contract.INTERVENTION_TOPIC,
                {
                    "start_step": span.start_step,
                    "end_step": span.end_step,
                    "kind": span.kind,
                    "operator_id": span.operator_id,
                    "reason": span.reason,
                },
                start_ns + span.end_step * period_ns,
            )
        emit(contract.OUTCOME_TOPIC, {"outcome": recording.outcome, "steps": len(states)}, end_ns)
        if cameras:
            _write_cameras(writer, cameras, start_ns)
        # The same facts as a metadata record, for tools that list a file's episode without
        # reading its messages (``mcap info``, Foxglove); the topics stay authoritative.
        facts = {
            **identity,
            "outcome": recording.outcome,
            "start_ns": start_ns,
            "end_ns": end_ns,
        }
        writer.add_metadata(
            contract.METADATA_NAME, {k: str(v) for k, v in facts.items() if v is not None}
        )
        writer.finish()
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    return path


def _write_cameras(writer: Writer, cameras: Mapping[str, CameraFrames], start_ns: int) -> None:
    schema_id = writer.register_schema(
        name=contract.CAMERA_SCHEMA,
        encoding=contract.CAMERA_ENCODING,
        data=build_file_descriptor_set(CompressedVideo).SerializeToString(),
    )
    for name, frames in cameras.items():
        channel = writer.register_channel(
            topic=contract.CAMERA_PREFIX + name,
            message_encoding=contract.CAMERA_ENCODING,
            schema_id=schema_id,
        )
        for t, unit in frames:
            at = start_ns + int(round(t * 1e9))
            message = CompressedVideo(frame_id=name, data=unit, format="h264")
            message.timestamp.FromNanoseconds(at)
            writer.add_message(
                channel, log_time=at, publish_time=at, data=message.SerializeToString()
            )
