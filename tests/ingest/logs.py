"""Episode logs for the tests: contract-conformant ones from the writer, and broken ones."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from mcap.writer import Writer

from services.episodes.model import EpisodeRecording, InterventionSpan
from services.ingest.formats import contract
from services.ingest.formats.mcap_writer import write_episode_mcap

HEADER = {
    "episode_uuid": "x",
    "robot_id": "robot-09",
    "task": "toy-reach",
    "policy_version": "3",
    "kind": "deployment",
    "operator_id": "op-1",
    "started_at": "2026-01-01T00:00:00+00:00",
    "control_hz": 10.0,
    "state_dim": 4,
    "action_dim": 2,
}

TAKEOVER_REASON = "no progress for 15 steps"


def recording(n=20, state_dim=4, action_dim=2, **changes) -> EpisodeRecording:
    """A deployment with one takeover at steps 5..8 (the operator's reason on step 5)."""
    rng = np.random.default_rng(n + state_dim)
    sources = ["policy"] * n
    sources[5:9] = ["operator"] * 4
    reasons = [None] * n
    reasons[5:6] = [TAKEOVER_REASON][: max(n - 5, 0)]
    fields = dict(
        episode_uuid=str(uuid.uuid4()),
        robot_id="robot-00",
        task="toy-reach",
        policy_version="3",
        kind="deployment",
        operator_id="op-1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        control_hz=10.0,
        states=rng.normal(size=(n, state_dim)),
        actions=rng.uniform(-1, 1, size=(n, action_dim)),
        control_source=sources,
        reasons=reasons,
        outcome="success",
        interventions=[
            InterventionSpan(5, 9, kind="correction", operator_id="op-7", reason=TAKEOVER_REASON)
        ],
    )
    fields.update(changes)
    return EpisodeRecording(**fields)


def step(i, t=None, state=None, action=None, source="policy") -> dict:
    return {
        "step": i,
        "t": i * 0.1 if t is None else t,
        "state": [0.0, 1.0, 2.0, 3.0] if state is None else state,
        "action": [0.1, 0.2] if action is None else action,
        "control_source": source,
        "reason": None,
    }


def write_raw(
    path: Path,
    steps: list[dict],
    header: dict | None = None,
    outcome=True,
    metadata: dict[str, str] | None = None,
    cameras: dict[str, tuple[str, list[dict]]] | None = None,
) -> Path:
    """An MCAP file with hand-written messages, for what the writer refuses to make; with
    ``metadata``, a ``flywheel.episode`` metadata record of those facts after them; with
    ``cameras``, name -> (schema name, JSON messages) on ``/flywheel/camera/<name>``, message
    k logged with step k."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start()
        schema = writer.register_schema(name="s", encoding="jsonschema", data=b"{}")
        channels = {
            t: writer.register_channel(topic=t, message_encoding="json", schema_id=schema)
            for t in (contract.EPISODE_TOPIC, contract.STEP_TOPIC, contract.OUTCOME_TOPIC)
        }

        def emit(topic, payload, at):
            writer.add_message(channels[topic], at, json.dumps(payload).encode(), at)

        emit(contract.EPISODE_TOPIC, HEADER if header is None else header, 0)
        for name, (schema_name, messages) in (cameras or {}).items():
            camera_schema = writer.register_schema(schema_name, "jsonschema", b"{}")
            channel = writer.register_channel(contract.CAMERA_PREFIX + name, "json", camera_schema)
            for k, message in enumerate(messages):
                writer.add_message(channel, k + 1, json.dumps(message).encode(), k + 1)
        for i, payload in enumerate(steps):
            emit(contract.STEP_TOPIC, payload, i + 1)
        if outcome:
            emit(contract.OUTCOME_TOPIC, {"outcome": "failure", "steps": len(steps)}, 999)
        if metadata is not None:
            writer.add_metadata(contract.METADATA_NAME, metadata)
        writer.finish()
    return path


def write_bad_logs(folder: Path, good: bytes) -> dict[str, str]:
    """Every kind of bad upload, in ``folder``; returns file name -> expected reason fragment."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.mcap").write_bytes(good[: len(good) * 2 // 3])
    (folder / "wrong-magic.mcap").write_bytes(b"\x89MCAX0\r\n" + good[8:])
    (folder / "empty.mcap").write_bytes(b"")
    (folder / "tiny.mcap").write_bytes(b"garbage")
    (folder / "not-a-log.mcap").write_text("this is a shopping list, not a robot log\n")
    write_raw(folder / "zero-length.mcap", [])
    nan = [step(0), step(1, state=[0.0, float("nan"), 1.0, 2.0]), step(2, state=[float("inf")] * 4)]
    write_raw(folder / "nan.mcap", nan)
    write_raw(folder / "time-backwards.mcap", [step(0, t=0.0), step(1, t=0.2), step(2, t=0.1)])
    write_raw(folder / "absurd-time.mcap", [step(0, t=0.0), step(1, t=9e9)])
    write_raw(folder / "wrong-action-size.mcap", [step(0), step(1, action=[0.1, 0.2, 0.3])])
    write_raw(folder / "unknown-source.mcap", [step(0), step(1, source="ghost")])
    write_raw(folder / "not-numbers.mcap", [step(0), step(1, state=["a", "b", "c", "d"])])
    write_raw(folder / "one-step.mcap", [step(0)])
    write_raw(folder / "no-outcome.mcap", [step(0), step(1)], outcome=False)
    write_raw(folder / "no-header.mcap", [step(0)], header={"unexpected": True})
    write_episode_mcap(recording(action_dim=3), folder / "other-embodiment.mcap")
    return {
        "truncated.mcap": "truncated MCAP: the file ends after",
        "wrong-magic.mcap": "not an MCAP file (bad magic bytes)",
        "empty.mcap": "empty file",
        "tiny.mcap": "not an MCAP file (bad magic bytes)",
        "not-a-log.mcap": "not an MCAP file",
        "zero-length.mcap": "zero-length episode",
        "nan.mcap": "observation.state has NaN/inf at 2 steps (1, 2)",
        "time-backwards.mcap": "timestamps go backwards or repeat at step 2",
        "absurd-time.mcap": "absurd timestamp",
        "wrong-action-size.mcap": "step 1: action has 3 values, header says 2",
        "unknown-source.mcap": "step 1: unknown control source 'ghost'",
        "not-numbers.mcap": "a step's state or action holds something that is not a number",
        "one-step.mcap": "too short: 1 steps",
        "no-outcome.mcap": "no /flywheel/outcome message",
        "no-header.mcap": "episode header is incomplete",
        "other-embodiment.mcap": "action has 3 values, expected 2 for task toy-reach",
    }


def write_bad_camera_uploads(folder: Path) -> dict[str, dict]:
    """Every kind of bad camera in Flywheel's own contract (``/flywheel/camera/<name>``, H.264
    in protobuf CompressedVideo), read with the default mapping: 20 steps at 10 Hz, camera
    ``front`` at 30 Hz from 10 ms before the first step, so step i shows frame 3i. Returns file
    name -> what the reader must say: ``{"camera", "step", "fact", "fragment"}`` (the episode
    reads, and that camera's fact names the step) or ``{"error"}`` (a LogFormatError)."""
    from tests.ingest.cameras import frame, h264

    folder.mkdir(parents=True, exist_ok=True)
    units = h264([frame(i) for i in range(60)])

    def upload(name: str, front: list[bytes], times: list[float] | None = None, camera="front"):
        times = [k / 30 - 0.01 for k in range(len(front))] if times is None else times
        frames = list(zip(times, front, strict=True))
        write_episode_mcap(recording(n=20), folder / name, cameras={camera: frames})

    truncated = list(units)
    truncated[30] = truncated[30][: len(truncated[30]) // 3]
    upload("camera-truncated-h264.mcap", truncated)
    upload("camera-no-keyframe.mcap", units[1:] + units[-1:])  # starts with a P-frame
    upload("camera-no-frames.mcap", [])
    # The camera switches to 48x36 at frame 30, with a keyframe and its new SPS/PPS.
    bigger = h264([frame(i, 48, 36) for i in range(30, 60)])
    upload("camera-resolution-change.mcap", units[:30] + bigger)
    times = [k / 30 - 0.01 for k in range(60)]
    times[30], times[31] = times[31], times[30]
    upload("camera-out-of-order.mcap", units, times)
    upload("camera-bad-name.mcap", units, camera="front-left")
    return {
        "camera-truncated-h264.mcap": {
            "camera": "front",
            "step": 10,
            "fact": "decode_error",
            "fragment": "H.264",
        },
        "camera-no-keyframe.mcap": {
            "camera": "front",
            "step": 0,
            "fact": "decode_error",
            "fragment": "keyframe",
        },
        "camera-no-frames.mcap": {
            "camera": "front",
            "step": 0,
            "fact": "missing_steps",
            "fragment": "",
        },
        "camera-resolution-change.mcap": {
            "camera": "front",
            "step": 10,
            "fact": "resolution_change",
            "fragment": "",
        },
        "camera-out-of-order.mcap": {
            "camera": "front",
            "step": 11,
            "fact": "out_of_order",
            "fragment": "",
        },
        "camera-bad-name.mcap": {"error": "camera topic /flywheel/camera/front-left: camera name"},
    }
