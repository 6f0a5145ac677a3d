"""A rollout's stages, typed: parsed from and written back to the Rollout row's JSON.

The row stores each stage as a JSON object (``name``, ``share``, ``robots``, ``episodes``,
``llr``, ``windows``, ``outcome``, ``spec``; ``started_at`` and ``cursor`` once the stage is
entered; ``control_total`` once a window was counted; ``counts`` once the episode counts
were checked; ``counts_accepted`` once a fleet manager resumed past a mismatch). ``Stage``
reads and writes exactly that object. A stage stored before plans were declared per stage
has no ``spec`` and reads as the default one, so those rollouts load and go on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from services.rollout.spec import StageSpec
from services.store.models import Rollout


@dataclass(frozen=True)
class Stage:
    name: str  # canary | 50% | ... | fleet
    share: float  # share of the fleet on the candidate; 1.0 is the promotion itself
    robots: tuple[str, ...]  # the robots on the candidate
    # Each watched metric's log-likelihood ratio (worse vs as good) so far.
    llr: Mapping[str, float]
    episodes: int = 0  # candidate episodes counted in this stage
    windows: tuple[Mapping[str, Any], ...] = ()  # the decision windows, as recorded
    outcome: str | None = None  # passed | completed | rolled_back | halted
    started_at: str | None = None  # ISO time the stage was entered
    cursor: int | None = None  # the newest heartbeat id already counted
    # Control-group sums over the stage (the failure test compares against all of them).
    control_total: Mapping[str, int] | None = None
    # What the plan declared for this stage: tests, limits, manual gate (spec.py).
    spec: StageSpec | None = None
    # The last check of heartbeat counts against ingested episodes (counts.py).
    counts: Mapping[str, Any] | None = None
    # A fleet manager resumed past a count mismatch: it no longer pauses this stage.
    counts_accepted: bool = False

    @property
    def plan(self) -> StageSpec:
        """The stage's declared spec; the default one for stages stored before specs."""
        return self.spec or StageSpec(share=self.share)

    @property
    def is_last(self) -> bool:
        """The whole fleet: entering this stage makes the candidate champion."""
        return self.share == 1.0

    def with_(self, **changes: Any) -> Stage:
        return replace(self, **changes)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Stage:
        return cls(
            name=data["name"],
            share=data["share"],
            robots=tuple(data["robots"]),
            episodes=data.get("episodes", 0),
            llr=dict(data.get("llr", {})),
            windows=tuple(data.get("windows", [])),
            outcome=data.get("outcome"),
            started_at=data.get("started_at"),
            cursor=data.get("cursor"),
            control_total=(
                dict(data["control_total"]) if data.get("control_total") is not None else None
            ),
            spec=StageSpec.from_json(data["spec"]) if data.get("spec") else None,
            counts=data.get("counts"),
            counts_accepted=data.get("counts_accepted", False),
        )

    def to_json(self) -> dict[str, Any]:
        """The stored object: the optional keys appear only once they have a value."""
        out: dict[str, Any] = {
            "name": self.name,
            "share": self.share,
            "robots": list(self.robots),
            "episodes": self.episodes,
            "llr": dict(self.llr),
            "windows": [dict(w) for w in self.windows],
            "outcome": self.outcome,
        }
        if self.started_at is not None:
            out["started_at"] = self.started_at
        if self.cursor is not None:
            out["cursor"] = self.cursor
        if self.control_total is not None:
            out["control_total"] = dict(self.control_total)
        if self.spec is not None:
            out["spec"] = self.spec.to_json()
        if self.counts is not None:
            out["counts"] = dict(self.counts)
        if self.counts_accepted:
            out["counts_accepted"] = True
        return out


def stages_of(rollout: Rollout) -> list[Stage]:
    return [Stage.from_json(s) for s in rollout.stages or []]


def store_stages(rollout: Rollout, stages: Sequence[Stage]) -> None:
    """Write the stages back (a new list, so SQLAlchemy sees the JSON column change)."""
    rollout.stages = [s.to_json() for s in stages]


def current_stage(rollout: Rollout) -> Stage | None:
    return Stage.from_json(rollout.stages[rollout.current_stage]) if rollout.stages else None
