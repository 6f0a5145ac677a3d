"""The episode model: one robot episode, in memory, whatever format it came in or goes out as.

A robot (or the simulated fleet) records an ``EpisodeRecording`` and uploads it; every log
reader gives back a ``RawEpisode`` (the recording with the step times it logged), or raises
``LogFormatError`` with a reason a person can act on, which the ingest stage quarantines the
log with. The readers (``services/ingest/formats/``), the MCAP writer, the validation suites,
the episode store, its export and the simulator all speak this model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from services.episodes.cameras import CameraTrack
from services.features import CONTROL_OPERATOR

INTERVENTION_KINDS = ("takeover", "correction", "e-stop")


class LogFormatError(ValueError):
    """The file is not a readable episode; the message says why."""


@dataclass(frozen=True)
class InterventionSpan:
    start_step: int
    end_step: int  # exclusive
    kind: str = "takeover"
    operator_id: str | None = None
    reason: str | None = None


@dataclass
class EpisodeRecording:
    """Everything a robot knows about one episode, in memory, ready to upload."""

    episode_uuid: str
    robot_id: str
    task: str
    policy_version: str | None
    kind: str  # demo | deployment
    operator_id: str | None
    started_at: datetime
    control_hz: float
    # (T, state_dim) and (T, action_dim)
    states: np.ndarray
    actions: np.ndarray
    control_source: Sequence[str]
    # Per step: why the operator took over, on the first step of each takeover; else None.
    reasons: Sequence[str | None]
    outcome: str
    interventions: list[InterventionSpan] = field(default_factory=list)
    # Camera name -> its frames as recorded: (seconds since the start, (H, W, 3) uint8 RGB),
    # in time order. A log read back carries its frames on disk instead (``RawEpisode.cameras``).
    camera_frames: dict[str, list[tuple[float, np.ndarray]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.started_at.tzinfo is None:
            raise ValueError("started_at must be timezone-aware")
        n = len(self.states)
        if not (len(self.actions) == len(self.control_source) == len(self.reasons) == n):
            raise ValueError("states, actions, control_source and reasons differ in length")
        for name, frames in self.camera_frames.items():
            times = [t for t, _ in frames]
            if any(b <= a for a, b in zip(times, times[1:], strict=False)):
                raise ValueError(f"camera {name}: frame times do not increase")
            if any(f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3 for _, f in frames):
                raise ValueError(f"camera {name}: frames must be (H, W, 3) uint8 RGB")


@dataclass
class RawEpisode(EpisodeRecording):
    """An upload read back: what the robot recorded, with the step times it logged."""

    # (T,) float64 seconds since the start, as logged (the writer derives them from the rate).
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # Camera name -> its frames, one per step, as an MP4 on disk (``cameras.CameraTrack``).
    cameras: dict[str, CameraTrack] = field(default_factory=dict)

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
                kind=kind if kind in INTERVENTION_KINDS else "takeover",
                operator_id=meta.get("operator_id") or operator_id,
                reason=meta.get("reason") or reasons[start],
            )
        )
    return result
