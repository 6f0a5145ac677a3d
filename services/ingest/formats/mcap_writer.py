"""Write one episode as an MCAP file in Flywheel's topic contract (see ``contract.py``).

This is what a robot (or the simulated fleet) runs to upload an episode. The file is written
to a temporary name and renamed, so the log store never shows a half-written upload.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from mcap.writer import CompressionType, Writer

from services.episodes.model import EpisodeRecording
from services.ingest.formats import contract


def write_episode_mcap(recording: EpisodeRecording, path: Path) -> Path:
    """Write ``recording`` to ``path`` atomically; returns the path."""
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
