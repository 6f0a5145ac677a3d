"""What a valid episode looks like for one kind of robot: the parameters of its suite.

A fleet's mapping file (``services/ingest/mapping.py``) declares its embodiments; an episode
takes the first embodiment whose ``robots`` and ``tasks`` patterns match it. An episode that
matches none is checked against the inferred embodiment: the sizes the episode store already
has (or the batch's most common per task), any finite values, both control sources.

An embodiment may declare its cameras (``cameras: {front: {width: 640, height: 480,
encoding: jpeg}}``): an episode of it must then have each, at that size and encoding. It also
sets how many black frames a camera may show (``max_black_fraction``, a share of the steps).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from services.episodes.cameras import RAW_ENCODINGS
from services.features import CONTROL_SOURCES

# Fewer steps than this is not an episode worth learning from (nothing to predict).
MIN_EPISODE_STEPS = 2
INFERRED = "inferred"
# What a camera may log (``CameraFacts.encoding``): raw encodings, or the compressed format.
CAMERA_ENCODINGS = (*RAW_ENCODINGS, "jpeg", "png", "h264")
# Black frames a camera may show, as a share of the steps: none. A frame this dark (mean below
# cameras.BLACK_LEVEL of 255) is a covered lens or a dead sensor, never the scene; the store
# cannot drop single steps, so a fleet whose cameras black out on purpose (exposure settling
# at start) raises it in its embodiment.
MAX_BLACK_FRACTION = 0.0

Bounds = tuple[float, float] | tuple[tuple[float, ...], tuple[float, ...]]


@dataclass(frozen=True)
class CameraDeclaration:
    """One camera an embodiment has: every episode of it must carry it, as declared."""

    name: str
    # Frame size in pixels; None: any.
    width: int | None = None
    height: int | None = None
    # What the camera logs (one of CAMERA_ENCODINGS); None: any.
    encoding: str | None = None

    def __post_init__(self) -> None:
        for size in (self.width, self.height):
            if size is not None and size < 1:
                raise ValueError(f"camera {self.name}: width and height must be positive")
        if self.encoding is not None and self.encoding not in CAMERA_ENCODINGS:
            raise ValueError(
                f"camera {self.name}: encoding {self.encoding!r} is none of {CAMERA_ENCODINGS}"
            )


@dataclass(frozen=True)
class Embodiment:
    name: str
    # fnmatch patterns on the episode's robot id and task; the first embodiment matching both wins.
    robots: tuple[str, ...] = ("*",)
    tasks: tuple[str, ...] = ("*",)
    # Sizes of observation.state and action; None: inferred from the store or the batch.
    state_dim: int | None = None
    action_dim: int | None = None
    # (low, high), each a number or one number per dimension (joint limits); None: unbounded.
    state_range: Bounds | None = None
    action_range: Bounds | None = None
    min_steps: int = MIN_EPISODE_STEPS
    # Who may be in control: a robot with no teleoperation rig logs only "policy".
    control_sources: tuple[str, ...] = CONTROL_SOURCES
    # The cameras each episode must carry, with their size and encoding.
    cameras: tuple[CameraDeclaration, ...] = ()
    # Share of the steps a camera may show black frames at (0: none).
    max_black_fraction: float = MAX_BLACK_FRACTION

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an embodiment needs a name")
        for dim in (self.state_dim, self.action_dim):
            if dim is not None and dim < 1:
                raise ValueError(f"embodiment {self.name}: sizes must be positive, not {dim}")
        if self.min_steps < 1:
            raise ValueError(f"embodiment {self.name}: min_steps must be at least 1")
        unknown = set(self.control_sources) - set(CONTROL_SOURCES)
        if unknown or not self.control_sources:
            raise ValueError(
                f"embodiment {self.name}: control_sources must be some of {CONTROL_SOURCES}, "
                f"not {sorted(unknown) or 'none'}"
            )
        names = [c.name for c in self.cameras]
        if len(names) != len(set(names)):
            raise ValueError(f"embodiment {self.name}: camera names repeat: {names}")
        if not 0 <= self.max_black_fraction <= 1:
            raise ValueError(f"embodiment {self.name}: max_black_fraction must be in [0, 1]")
        for label, bounds, dim in (
            ("state_range", self.state_range, self.state_dim),
            ("action_range", self.action_range, self.action_dim),
        ):
            if bounds is not None:
                _check_bounds(self.name, label, bounds, dim)

    def matches(self, robot_id: str, task: str) -> bool:
        return any(fnmatch.fnmatchcase(robot_id, p) for p in self.robots) and any(
            fnmatch.fnmatchcase(task, p) for p in self.tasks
        )


def _check_bounds(name: str, label: str, bounds: Bounds, dim: int | None) -> None:
    if len(bounds) != 2:
        raise ValueError(f"embodiment {name}: {label} must be [low, high]")
    low, high = bounds
    if isinstance(low, Sequence) != isinstance(high, Sequence):
        raise ValueError(f"embodiment {name}: {label} low and high must both be lists or numbers")
    if isinstance(low, Sequence):
        if len(low) != len(high) or (dim is not None and len(low) != dim):
            raise ValueError(f"embodiment {name}: {label} needs one low and high per dimension")
        pairs = list(zip(low, high, strict=True))
    else:
        pairs = [(low, high)]
    if any(lo > hi for lo, hi in pairs):
        raise ValueError(f"embodiment {name}: {label} has low above high")


def embodiment_for(embodiments: Sequence[Embodiment], robot_id: str, task: str) -> Embodiment:
    """The first embodiment matching the episode, else the inferred one."""
    for embodiment in embodiments:
        if embodiment.matches(robot_id, task):
            return embodiment
    return Embodiment(name=INFERRED)
