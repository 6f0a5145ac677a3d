"""Camera facts as rows for the suites: one row per episode and camera, one column per check.

A reader leaves each camera of an episode as a ``CameraTrack`` whose ``CameraFacts`` say what
the camera did over the episode's steps (``services/episodes/cameras.py``). Here each check
reduces them to a number the camera suite expects to be zero (``black_fraction``: at most the
embodiment's ``max_black_fraction``), and keeps the reason, naming the camera and the step
(``camera front: step 41's frame is 0.40 s old (limit 0.10 s)``), for a camera that breaks it.
A camera the episode's embodiment declares but the episode lacks is a row too, which breaks
``missing``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from services.episodes.cameras import CameraFacts, CameraSpec, CameraTrack
from services.validation.embodiment import CameraDeclaration, Embodiment

# The limits of a camera the mapping does not name (Flywheel's contract cameras).
DEFAULT_SPEC = {
    f.name: f.default for f in fields(CameraSpec) if f.name in ("max_age_s", "frozen_s")
}


@dataclass(frozen=True)
class CameraRow:
    """What one check needs to know about one camera of one episode."""

    name: str
    steps: int
    embodiment: Embodiment
    # None: the embodiment declares the camera and the episode has none.
    track: CameraTrack | None
    declared: CameraDeclaration | None
    # The camera's limits (s), from the mapping: staleness, and identical frames.
    max_age_s: float
    frozen_s: float

    @property
    def facts(self) -> CameraFacts:
        return self.track.facts if self.track is not None else CameraFacts()

    @property
    def size(self) -> str:
        return f"{self.facts.width}x{self.facts.height}"


def _steps(first: int, count: int) -> str:
    return f"step {first}" if count == 1 else f"{count} steps, first at step {first}"


def _missing_steps(row: CameraRow) -> str:
    facts = row.facts
    if facts.missing_steps >= row.steps:
        return f"camera {row.name}: no frame at or before any step (steps 0-{row.steps - 1})"
    last = facts.missing_steps - 1
    return (
        f"camera {row.name}: no frame at or before step {last} "
        f"({facts.missing_steps} steps before its first frame)"
    )


def _stale(row: CameraRow) -> str:
    facts = row.facts
    if facts.stale_steps == 1:
        return (
            f"camera {row.name}: step {facts.first_stale_step}'s frame is "
            f"{facts.max_age_s:.2f} s old (limit {row.max_age_s:.2f} s)"
        )
    return (
        f"camera {row.name}: frames older than {row.max_age_s:.2f} s at "
        f"{_steps(facts.first_stale_step, facts.stale_steps)} (oldest {facts.max_age_s:.2f} s, "
        f"largest gap between frames {facts.max_gap_s:.2f} s)"
    )


def _out_of_order(row: CameraRow) -> str:
    step, back = row.facts.out_of_order
    return (
        f"camera {row.name}: frames out of order at step {step} (a frame {back:.3f} s older "
        "than the one before it)"
    )


def _undecodable(row: CameraRow) -> str:
    step, why = row.facts.decode_error
    return f"camera {row.name}: step {step}'s frame cannot be decoded: {why}"


def _resolution_change(row: CameraRow) -> str:
    step, width, height = row.facts.resolution_change
    return (
        f"camera {row.name}: resolution changes from {row.size} to {width}x{height} at step {step}"
    )


def _wrong_size(row: CameraRow) -> bool:
    declared, facts = row.declared, row.facts
    if declared is None or not facts.width:
        return False
    return (declared.width or facts.width, declared.height or facts.height) != (
        facts.width,
        facts.height,
    )


def _wrong_encoding(row: CameraRow) -> bool:
    declared, facts = row.declared, row.facts
    return bool(declared and declared.encoding and facts.encoding) and (
        declared.encoding != facts.encoding
    )


def _black_fraction(row: CameraRow) -> float:
    return row.facts.black_steps / row.steps if row.steps else 0.0


def _black(row: CameraRow) -> str:
    facts = row.facts
    return (
        f"camera {row.name}: black frames at {_steps(facts.first_black_step, facts.black_steps)} "
        f"({_black_fraction(row):.0%} of the steps; embodiment {row.embodiment.name} allows "
        f"{row.embodiment.max_black_fraction:.0%}, max_black_fraction)"
    )


def _explained(row: CameraRow) -> bool:
    """Whether a fact already says why the camera has no video."""
    facts = row.facts
    return bool(
        facts.missing_steps or facts.out_of_order or facts.decode_error or facts.resolution_change
    )


@dataclass(frozen=True)
class CameraCheck:
    """A per-camera check: its fact column, the camera's value, and why it fails."""

    column: str
    value: Callable[[CameraRow], float]
    describe: Callable[[CameraRow], str]


CAMERA_CHECKS = (
    CameraCheck(
        "missing",
        lambda row: row.track is None,
        lambda row: (
            f"camera {row.name}: embodiment {row.embodiment.name} declares it, the episode has "
            "no frames from it"
        ),
    ),
    CameraCheck("missing_steps", lambda row: row.facts.missing_steps, _missing_steps),
    CameraCheck("stale_steps", lambda row: row.facts.stale_steps, _stale),
    CameraCheck("out_of_order", lambda row: row.facts.out_of_order is not None, _out_of_order),
    CameraCheck("undecodable", lambda row: row.facts.decode_error is not None, _undecodable),
    CameraCheck(
        "resolution_change",
        lambda row: row.facts.resolution_change is not None,
        _resolution_change,
    ),
    CameraCheck(
        "wrong_size",
        _wrong_size,
        lambda row: (
            f"camera {row.name}: frames are {row.size}, embodiment {row.embodiment.name} "
            f"declares {row.declared.width or 'any'}x{row.declared.height or 'any'}"
        ),
    ),
    CameraCheck(
        "wrong_encoding",
        _wrong_encoding,
        lambda row: (
            f"camera {row.name}: logs {row.facts.encoding}, embodiment {row.embodiment.name} "
            f"declares {row.declared.encoding}"
        ),
    ),
    CameraCheck(
        "frozen",
        lambda row: row.facts.frozen_from_step is not None,
        lambda row: (
            f"camera {row.name}: frozen from step {row.facts.frozen_from_step} (identical "
            f"frames for over {row.frozen_s:g} s)"
        ),
    ),
    CameraCheck("black_fraction", _black_fraction, _black),
    CameraCheck(
        "no_video",
        lambda row: row.track is not None and row.track.path is None and not _explained(row),
        lambda row: f"camera {row.name}: its frames made no video track",
    ),
)
# Columns kept beside the checks, for the suite's statistics and a reader of the results.
FACT_COLUMNS = ("frames", "width", "height", "encoding", "max_age_s", "max_gap_s", "black_steps")


def camera_rows(
    cameras: dict[str, CameraTrack],
    steps: int,
    embodiment: Embodiment,
    specs: Sequence[CameraSpec] = (),
) -> list[CameraRow]:
    """One row per camera the episode has or its embodiment declares, in name order."""
    declared = {c.name: c for c in embodiment.cameras}
    limits = {s.name: {"max_age_s": s.max_age_s, "frozen_s": s.frozen_s} for s in specs}
    return [
        CameraRow(
            name=name,
            steps=steps,
            embodiment=embodiment,
            track=cameras.get(name),
            declared=declared.get(name),
            **limits.get(name, DEFAULT_SPEC),
        )
        for name in sorted(set(cameras) | set(declared))
    ]
