"""Read one episode from an MCAP upload in Flywheel's topic contract (see ``contract.py``).

Anything that keeps the file from being one well-formed episode raises ``LogFormatError``
with a reason a person can act on; the ingest stage quarantines the file with it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader

from services.features import CONTROL_OPERATOR, CONTROL_SOURCES, OUTCOMES
from services.fleetlogs import contract
from services.fleetlogs.mcap_writer import InterventionSpan

MCAP_MAGIC = b"\x89MCAP0\r\n"


class LogFormatError(ValueError):
    """The file is not a readable episode; the message says why."""


@dataclass
class RawEpisode:
    episode_uuid: str
    robot_id: str
    task: str
    policy_version: str | None
    kind: str
    operator_id: str | None
    started_at: datetime
    control_hz: float
    states: np.ndarray  # (T, state_dim) float32
    actions: np.ndarray  # (T, action_dim) float32
    timestamps: np.ndarray  # (T,) seconds since the start
    control_source: list[str]
    reasons: list[str | None]
    outcome: str
    interventions: list[InterventionSpan] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.states)

    @property
    def duration_s(self) -> float:
        return float(self.timestamps[-1] + 1.0 / self.control_hz) if self.steps else 0.0


def read_episode_mcap(data: bytes) -> RawEpisode:
    """Parse the bytes of one upload (the caller hashed them already; no second read)."""
    if not data:
        raise LogFormatError("empty file")
    if not data.startswith(MCAP_MAGIC):
        raise LogFormatError("not an MCAP file (bad magic bytes)")
    header: dict | None = None
    steps: list[dict] = []
    spans: list[dict] = []
    outcome: dict | None = None
    try:
        for _, channel, message in NonSeekingReader(io.BytesIO(data)).iter_messages():
            payload = json.loads(message.data)
            if channel.topic == contract.EPISODE_TOPIC:
                header = payload
            elif channel.topic == contract.STEP_TOPIC:
                steps.append(payload)
            elif channel.topic == contract.INTERVENTION_TOPIC:
                spans.append(payload)
            elif channel.topic == contract.OUTCOME_TOPIC:
                outcome = payload
    except (McapError, EOFError, ValueError, KeyError) as exc:
        raise LogFormatError(f"truncated or corrupt MCAP ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # the mcap library raises plain struct/zstd errors on bad chunks
        raise LogFormatError(f"corrupt MCAP ({type(exc).__name__}: {exc})") from exc
    if header is None:
        raise LogFormatError(f"no {contract.EPISODE_TOPIC} message: not a Flywheel episode log")
    if not steps:
        raise LogFormatError("zero-length episode: no steps")
    if outcome is None:
        raise LogFormatError(f"no {contract.OUTCOME_TOPIC} message: the upload is incomplete")
    return _episode(header, steps, spans, outcome)


def _episode(header: dict, steps: list[dict], spans: list[dict], outcome: dict) -> RawEpisode:
    try:
        state_dim, action_dim = int(header["state_dim"]), int(header["action_dim"])
        started_at = datetime.fromisoformat(header["started_at"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LogFormatError(f"episode header is incomplete or malformed: {exc}") from exc
    if started_at.tzinfo is None:
        raise LogFormatError("episode header started_at has no time zone")
    for i, step in enumerate(steps):
        if len(step.get("state") or ()) != state_dim:
            raise LogFormatError(
                f"step {i}: state has {len(step.get('state') or ())} values, "
                f"header says {state_dim}"
            )
        if len(step.get("action") or ()) != action_dim:
            raise LogFormatError(
                f"step {i}: action has {len(step.get('action') or ())} values, "
                f"header says {action_dim}"
            )
        if step.get("control_source") not in CONTROL_SOURCES:
            raise LogFormatError(f"step {i}: unknown control source {step.get('control_source')!r}")
    if outcome.get("outcome") not in OUTCOMES:
        raise LogFormatError(f"unknown outcome {outcome.get('outcome')!r}")
    sources = [s["control_source"] for s in steps]
    reasons = [s.get("reason") for s in steps]
    kind = header.get("kind", "deployment")
    return RawEpisode(
        episode_uuid=str(header.get("episode_uuid", "")),
        robot_id=str(header.get("robot_id", "unknown")),
        task=str(header.get("task", "unknown")),
        policy_version=header.get("policy_version"),
        kind=kind,
        operator_id=header.get("operator_id"),
        started_at=started_at,
        control_hz=float(header.get("control_hz") or 1.0),
        states=np.asarray([s["state"] for s in steps], dtype=np.float64).astype(np.float32),
        actions=np.asarray([s["action"] for s in steps], dtype=np.float64).astype(np.float32),
        timestamps=np.asarray([s.get("t", np.nan) for s in steps], dtype=np.float64),
        control_source=sources,
        reasons=reasons,
        outcome=outcome["outcome"],
        interventions=[] if kind == "demo" else _interventions(sources, reasons, spans, header),
    )


def _interventions(
    sources: list[str], reasons: list[str | None], spans: list[dict], header: dict
) -> list[InterventionSpan]:
    """Takeover spans from who was in control, with kind and reason from the robot's messages."""
    declared = {int(s.get("start_step", -1)): s for s in spans}
    operator = np.asarray(sources) == CONTROL_OPERATOR
    edges = np.flatnonzero(np.diff(np.r_[False, operator, False].astype(np.int8)))
    result = []
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        meta = declared.get(int(start), {})
        result.append(
            InterventionSpan(
                start_step=int(start),
                end_step=int(end),
                kind=meta.get("kind") or "takeover",
                operator_id=meta.get("operator_id") or header.get("operator_id"),
                reason=meta.get("reason") or reasons[start],
            )
        )
    return result
