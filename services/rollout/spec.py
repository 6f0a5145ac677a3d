"""A rollout plan declared stage by stage, as Argo Rollouts declares its steps and analysis.

Each stage says which share of the fleet runs the candidate, which metrics are watched and
with which sequential test, how much exposure it needs at least (``min_episodes``) and at
most (``max_episodes`` candidate episodes, ``max_hours`` since the stage started), and
whether a fleet manager must let it through by hand (``pause``). A plan file
(``FLYWHEEL_ROLLOUT_PLAN``) is JSON::

    {"stages": [
        {"share": 0.25, "max_episodes": 120, "max_hours": 24,
         "metrics": {"failures": {"increase": 0.25}, "interventions": {"ratio": 2.0}}},
        {"share": 0.5, "pause": true},
        {"share": 1.0}
    ]}

A key a stage leaves out takes the plan's ``defaults`` (an object of the same keys), then
the ``FLYWHEEL_ROLLOUT_*`` settings. Mistakes are refused with the stage and key named.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.rollout.sequential import SPRT, ProportionSPRT

# Watched metrics: events over exposure, compared between candidate and champion robots.
# A failure is an episode the robot did not complete on its own (it failed, or the operator
# had to finish it); an intervention is one operator takeover.
METRICS = {
    "failures": "episodes",  # failure rate, per episode: the proportion test
    "interventions": "hours",  # interventions per robot-hour: the rate-ratio test
}
TESTS: dict[str, type[SPRT] | type[ProportionSPRT]] = {
    "failures": ProportionSPRT,
    "interventions": SPRT,
}
STAGE_KEYS = ("share", "metrics", "min_episodes", "max_episodes", "max_hours", "pause")

Test = SPRT | ProportionSPRT


class PlanError(ValueError):
    """A rollout plan that cannot be run; the message names the stage and the key."""


@dataclass(frozen=True)
class StageSpec:
    # Share of the fleet on the candidate; 1.0 is the promotion itself (nothing is watched).
    share: float
    # Each watched metric's sequential test; every one must accept "not worse" to advance.
    tests: Mapping[str, Test] = field(default_factory=lambda: {m: t() for m, t in TESTS.items()})
    # Candidate episodes the stage needs at least before it may advance.
    min_episodes: int = 12
    # Caps: when neither bound of every test is crossed by this many candidate episodes, or
    # this many hours after the stage started, the rollout pauses for a fleet manager.
    max_episodes: int | None = 240
    max_hours: float | None = 24.0
    # A manual gate: when the tests accept, wait for a fleet manager to advance.
    pause: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise PlanError(f"share must lie in (0, 1], got {self.share}")
        unknown = set(self.tests) - set(TESTS)
        if unknown:
            raise PlanError(f"unknown metric(s) {sorted(unknown)}: known are {sorted(TESTS)}")
        if self.min_episodes < 1:
            raise PlanError("min_episodes must be at least 1")
        if self.max_episodes is not None and self.max_episodes < self.min_episodes:
            raise PlanError(
                f"max_episodes ({self.max_episodes}) is below min_episodes ({self.min_episodes})"
            )
        if self.max_hours is not None and self.max_hours <= 0:
            raise PlanError(f"max_hours must be positive, got {self.max_hours}")

    def to_json(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "metrics": {m: asdict(t) for m, t in self.tests.items()},
            "min_episodes": self.min_episodes,
            "max_episodes": self.max_episodes,
            "max_hours": self.max_hours,
            "pause": self.pause,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StageSpec:
        return parse_stage(data, defaults={}, where="stage")


def parse_stage(data: Mapping[str, Any], *, defaults: Mapping[str, Any], where: str) -> StageSpec:
    """One stage of a plan file (or a stored stage's spec), with ``defaults`` filled in."""
    if not isinstance(data, Mapping):
        raise PlanError(f"{where}: a stage is an object, got {data!r}")
    _known(data, STAGE_KEYS, where)
    merged = _layer(defaults, data)
    if "share" not in merged:
        raise PlanError(f"{where}: 'share' is required")
    metrics = merged.get("metrics", {m: {} for m in TESTS})
    if not isinstance(metrics, Mapping):
        raise PlanError(f"{where}: 'metrics' maps a metric name to its test's parameters")
    tests = {}
    for metric, params in metrics.items():
        _known({metric: None}, tuple(TESTS), f"{where}.metrics")
        kind = TESTS[metric]
        params = params or {}
        if not isinstance(params, Mapping):
            raise PlanError(f"{where}.metrics.{metric}: the test's parameters are an object")
        _known(params, tuple(kind.__dataclass_fields__), f"{where}.metrics.{metric}")
        try:
            tests[metric] = kind(**params)
        except (TypeError, ValueError) as exc:
            raise PlanError(f"{where}.metrics.{metric}: {exc}") from exc
    try:
        return StageSpec(
            share=float(merged["share"]),
            tests=tests,
            min_episodes=int(merged.get("min_episodes", 12)),
            max_episodes=_optional(merged.get("max_episodes", 240), int),
            max_hours=_optional(merged.get("max_hours", 24.0), float),
            pause=bool(merged.get("pause", False)),
        )
    except (TypeError, ValueError) as exc:
        raise PlanError(f"{where}: {exc}") from exc


def parse_plan(text: str, *, defaults: Mapping[str, Any], source: str) -> list[StageSpec]:
    """A plan file's stages; ``defaults`` are the settings' values for keys left out."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{source}: not JSON: {exc}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("stages"), list):
        raise PlanError(f'{source}: a plan is an object with a list of "stages"')
    _known(data, ("stages", "defaults"), source)
    own = data.get("defaults", {})
    _known(own, STAGE_KEYS[1:], f"{source}: defaults")
    return [
        parse_stage(stage, defaults=_layer(defaults, own), where=f"{source}: stage {i + 1}")
        for i, stage in enumerate(data["stages"])
    ]


def read_plan(path: Path, *, defaults: Mapping[str, Any]) -> list[StageSpec]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PlanError(f"cannot read the rollout plan {path}: {exc.strerror}") from exc
    return parse_plan(text, defaults=defaults, source=str(path))


def _layer(defaults: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``defaults``; a metric ``over`` names keeps the parameters it does
    not set from ``defaults`` (the metrics ``over`` names are the ones watched)."""
    out = {**defaults, **over}
    base, top = defaults.get("metrics"), over.get("metrics")
    if isinstance(base, Mapping) and isinstance(top, Mapping):
        out["metrics"] = {
            m: {**(base.get(m) or {}), **(p or {})} if isinstance(p, Mapping) or p is None else p
            for m, p in top.items()
        }
    return out


def _known(data: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(keys)}"
            raise PlanError(f"{where}: unknown key {key!r}{hint}")


def _optional(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)
