"""The Great Expectations suites for the episodes of an ingest batch, one per embodiment.

One run per embodiment per batch, not per file: importing Great Expectations costs seconds, so
it is imported and its context set up lazily, once per process. Each episode becomes one row of
facts reduced from its frames with numpy (its sizes and length, and how many of its steps break
each per-step check: non-finite values, values outside the embodiment's ranges, a clock that is
missing, absurd, runs backwards or jumps, a control source the embodiment does not allow). The
suite expects every count to be zero; the steps behind a count are kept aside, so an episode
that fails is quarantined with a specific reason (``observation.state has NaN/inf at 2 steps
(1, 2)``) while the rest of the batch goes on. Checking facts per episode rather than every
frame costs the suite the same whatever the episodes' length.

An embodiment (``embodiment.py``) sets the suite's parameters: state and action sizes, value
ranges (joint limits), minimum length, and which control sources it may log. Checks every suite
has: finite values, timestamps present, plausible and strictly increasing.

Cameras have a suite of their own per embodiment, over one row per episode and camera
(``cameras.py``): steps before the first frame, stale frames, frames out of order or
undecodable, a resolution change, size and encoding against the embodiment's declaration, a
declared camera missing, a frozen camera and black frames. A failing camera fails its episode.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from services.episodes.cameras import CameraSpec
from services.episodes.model import RawEpisode
from services.features import CONTROL_SOURCES, EPISODE_ID
from services.validation.cameras import CAMERA_CHECKS, FACT_COLUMNS, camera_rows
from services.validation.embodiment import Embodiment, embodiment_for

# Longest plausible gap between two control steps, in seconds (0.1 Hz): larger is a bad clock.
MAX_STEP_GAP_S = 10.0
# Longest plausible episode, in seconds.
MAX_EPISODE_S = 24 * 3600.0
# Columns that name a failing episode (a failing camera) in the suites' results.
INDEX_COLUMNS = [EPISODE_ID, "task"]
CAMERA_INDEX_COLUMNS = [EPISODE_ID, "camera"]
# Steps listed in a reason before it says "...".
SHOWN_STEPS = 5


@dataclass
class ValidationReport:
    # Readable reasons per failing episode id.
    failures: dict[str, list[str]] = field(default_factory=dict)
    # Summary of the suites' results, JSON-serialisable, to store beside the ingest run.
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.failures

    def reason(self, episode_id: str) -> str | None:
        reasons = self.failures.get(episode_id)
        return "; ".join(reasons) if reasons else None


@dataclass(frozen=True)
class _StepCheck:
    """A per-step check: the fact column counting the steps that break it, and why they do."""

    column: str
    # The steps of one episode that break the check, as a boolean mask.
    broken: Callable[[RawEpisode, Embodiment], np.ndarray]
    # The reason, from the episode, its embodiment and the broken steps' text ("at step 4").
    describe: Callable[[RawEpisode, Embodiment, np.ndarray, str], str]
    # Whether an embodiment's suite expects it (the range checks: only where it sets ranges).
    expected: Callable[[Embodiment], bool] = lambda embodiment: True


def _dt(raw: RawEpisode) -> np.ndarray:
    """Seconds since the previous step; the first step has none (NaN, which no check fails)."""
    return np.r_[np.nan, np.diff(raw.timestamps)]


def _out_of_range(values: np.ndarray, bounds) -> np.ndarray:
    """Per row: some value outside (low, high). NaN is not out of range: the finite check has
    it. A row of the wrong size is left to the size check."""
    if bounds is None:
        return np.zeros(len(values), dtype=bool)
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    if values.shape[1:] and low.shape and low.shape[0] != values.shape[1]:
        return np.zeros(len(values), dtype=bool)
    return ((values < low) | (values > high)).any(axis=1)


def _source_text(source: str, embodiment: Embodiment) -> str:
    if source in CONTROL_SOURCES:
        return f"control source {source!r} not allowed for embodiment {embodiment.name}"
    return f"unknown control source {source!r}"


def _range_text(bounds) -> str:
    low, high = bounds
    if isinstance(low, Sequence):
        return "its per-dimension limits"
    return f"[{low:g}, {high:g}]"


def _bad_sources(raw: RawEpisode, embodiment: Embodiment) -> np.ndarray:
    allowed = set(embodiment.control_sources)
    if set(raw.control_source) <= allowed:  # the common case, without a pass per step
        return np.zeros(raw.steps, dtype=bool)
    return np.array([source not in allowed for source in raw.control_source], dtype=bool)


STEP_CHECKS = (
    _StepCheck(
        "state_nonfinite_steps",
        lambda raw, _: ~np.isfinite(raw.states).all(axis=1),
        lambda raw, e, steps, where: f"observation.state has NaN/inf {where}",
    ),
    _StepCheck(
        "action_nonfinite_steps",
        lambda raw, _: ~np.isfinite(raw.actions).all(axis=1),
        lambda raw, e, steps, where: f"action has NaN/inf {where}",
    ),
    _StepCheck(
        "timestamp_missing_steps",
        lambda raw, _: np.isnan(raw.timestamps),
        lambda raw, e, steps, where: f"timestamp missing or NaN {where}",
    ),
    _StepCheck(
        "timestamp_absurd_steps",
        lambda raw, _: (raw.timestamps < 0) | (raw.timestamps > MAX_EPISODE_S),
        lambda raw, e, steps, where: (
            f"absurd timestamp (negative or over {MAX_EPISODE_S / 3600:.0f} h into the "
            f"episode) {where}"
        ),
    ),
    _StepCheck(
        "clock_backwards_steps",
        lambda raw, _: _dt(raw) <= 0,
        lambda raw, e, steps, where: f"timestamps go backwards or repeat {where}",
    ),
    _StepCheck(
        "clock_jump_steps",
        lambda raw, _: _dt(raw) > MAX_STEP_GAP_S,
        lambda raw, e, steps, where: f"clock jumps over {MAX_STEP_GAP_S:g} s between steps {where}",
    ),
    _StepCheck(
        "control_source_not_allowed_steps",
        _bad_sources,
        lambda raw, e, steps, where: f"{_source_text(raw.control_source[steps[0]], e)} {where}",
    ),
    _StepCheck(
        "state_out_of_range_steps",
        lambda raw, e: _out_of_range(raw.states, e.state_range),
        lambda raw, e, steps, where: (
            f"observation.state outside {_range_text(e.state_range)} of embodiment {e.name} {where}"
        ),
        lambda e: e.state_range is not None,
    ),
    _StepCheck(
        "action_out_of_range_steps",
        lambda raw, e: _out_of_range(raw.actions, e.action_range),
        lambda raw, e, steps, where: (
            f"action outside {_range_text(e.action_range)} of embodiment {e.name} {where}"
        ),
        lambda e: e.action_range is not None,
    ),
)


def _where(steps: np.ndarray) -> str:
    if len(steps) == 1:
        return f"at step {steps[0]}"
    shown = ", ".join(map(str, steps[:SHOWN_STEPS].tolist()))
    return f"at {len(steps)} steps ({shown}{', ...' if len(steps) > SHOWN_STEPS else ''})"


@dataclass
class EpisodeFacts:
    """The batch's facts table (one row per episode, the columns the suites check) and, for
    every count that is not zero, the reason naming its steps."""

    table: pd.DataFrame
    # (episode id, fact column) -> the reason for the steps it counts.
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    # One row per episode and camera (``cameras.CAMERA_CHECKS`` columns), and the reasons
    # keyed by (episode id, camera, column).
    cameras: pd.DataFrame = field(default_factory=pd.DataFrame)
    camera_reasons: dict[tuple[str, str, str], str] = field(default_factory=dict)


def episode_facts(
    episodes: Iterable[tuple[str, RawEpisode]],
    embodiments: Sequence[Embodiment] = (),
    cameras: Sequence[CameraSpec] = (),
) -> EpisodeFacts:
    """One row of facts per (episode id, RawEpisode), checked against its embodiment, and one
    per camera; ``cameras`` are the mapping's (their staleness limits, for the reasons)."""
    rows: dict[str, list] = defaultdict(list)
    reasons: dict[tuple[str, str], str] = {}
    camera_table: dict[str, list] = defaultdict(list)
    camera_reasons: dict[tuple[str, str, str], str] = {}
    for episode_id, raw in episodes:
        embodiment = embodiment_for(embodiments, raw.robot_id, raw.task)
        rows[EPISODE_ID].append(episode_id)
        rows["task"].append(raw.task)
        rows["embodiment"].append(embodiment.name)
        rows["steps"].append(raw.steps)
        rows["state_dim"].append(raw.state_dim)
        rows["action_dim"].append(raw.action_dim)
        for check in STEP_CHECKS:
            steps = np.flatnonzero(check.broken(raw, embodiment))
            rows[check.column].append(len(steps))
            if len(steps):
                reasons[episode_id, check.column] = check.describe(
                    raw, embodiment, steps, _where(steps)
                )
        for camera in camera_rows(raw.cameras, raw.steps, embodiment, cameras):
            camera_table[EPISODE_ID].append(episode_id)
            camera_table["camera"].append(camera.name)
            camera_table["embodiment"].append(embodiment.name)
            for column in FACT_COLUMNS:
                camera_table[column].append(getattr(camera.facts, column))
            for check in CAMERA_CHECKS:
                value = float(check.value(camera))
                camera_table[check.column].append(value)
                if value:
                    camera_reasons[episode_id, camera.name, check.column] = check.describe(camera)
    columns = [EPISODE_ID, "task", "embodiment", "steps", "state_dim", "action_dim"]
    columns += [check.column for check in STEP_CHECKS]
    camera_columns = [EPISODE_ID, "camera", "embodiment", *FACT_COLUMNS]
    camera_columns += [check.column for check in CAMERA_CHECKS]
    return EpisodeFacts(
        pd.DataFrame({c: rows[c] for c in columns}, columns=columns),
        reasons,
        pd.DataFrame({c: camera_table[c] for c in camera_columns}, columns=camera_columns),
        camera_reasons,
    )


def expected_dims(
    facts: pd.DataFrame, known: Mapping[str, tuple[int, int]] | None = None
) -> dict[str, tuple[int, int]]:
    """(state_dim, action_dim) per task: the known ones, else the batch's most common."""
    result = dict(known or {})
    for task, group in facts.groupby("task"):
        if task not in result:
            counts = Counter(zip(group["state_dim"], group["action_dim"], strict=True))
            result[task] = tuple(map(int, counts.most_common(1)[0][0]))
    return result


@dataclass(frozen=True)
class _Check:
    expectation: Any
    # Builds the reason for one failing episode from its row of facts.
    describe: Callable[[dict], str]


def _checks(embodiment: Embodiment, reasons: Mapping[tuple[str, str], str]) -> list[_Check]:
    import great_expectations as gx

    e = gx.expectations
    checks = [
        _Check(
            e.ExpectColumnPairValuesToBeEqual(column_A="state_dim", column_B="expected_state_dim"),
            lambda r: (
                f"observation.state has {r['state_dim']} values, expected "
                f"{r['expected_state_dim']} for task {r['task']}"
            ),
        ),
        _Check(
            e.ExpectColumnPairValuesToBeEqual(
                column_A="action_dim", column_B="expected_action_dim"
            ),
            lambda r: (
                f"action has {r['action_dim']} values, expected "
                f"{r['expected_action_dim']} for task {r['task']}"
            ),
        ),
    ]
    for check in STEP_CHECKS:
        if not check.expected(embodiment):
            continue
        checks.append(
            _Check(
                e.ExpectColumnValuesToBeBetween(column=check.column, min_value=0, max_value=0),
                lambda r, column=check.column: reasons[r[EPISODE_ID], column],
            )
        )
    checks.append(
        _Check(
            e.ExpectColumnValuesToBeBetween(column="steps", min_value=embodiment.min_steps),
            lambda r: f"too short: {r['steps']} steps, fewer than {embodiment.min_steps}",
        )
    )
    return checks


def _camera_checks(
    embodiment: Embodiment, reasons: Mapping[tuple[str, str, str], str]
) -> list[_Check]:
    import great_expectations as gx

    e = gx.expectations
    return [
        _Check(
            e.ExpectColumnValuesToBeBetween(
                column=check.column,
                min_value=0,
                max_value=embodiment.max_black_fraction if check.column == "black_fraction" else 0,
            ),
            lambda r, column=check.column: reasons[r[EPISODE_ID], r["camera"], column],
        )
        for check in CAMERA_CHECKS
    ]


@cache
def _batch_definition():
    """The ephemeral GX context and its one in-memory asset, built once per process."""
    import great_expectations as gx

    # GX sets this module's logger to INFO itself: one line per ephemeral context is noise.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    try:  # the per-metric progress bars would flood the nightly logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except (ImportError, AttributeError):  # pragma: no cover - a GX without the setting
        pass
    asset = context.data_sources.add_pandas("fleet").add_dataframe_asset("frames")
    return asset.add_batch_definition_whole_dataframe("batch")


def validate_episodes(
    facts: EpisodeFacts,
    *,
    dims: Mapping[str, tuple[int, int]] | None = None,
    embodiments: Sequence[Embodiment] = (),
    min_steps: int | None = None,
) -> ValidationReport:
    """Run each embodiment's suite once over its episodes of the batch (see ``episode_facts``).

    An embodiment's sizes are expected where it sets them; otherwise ``dims`` gives the
    expected (state_dim, action_dim) per task, such as the episode store's, and a task it does
    not name must agree with the batch's most common sizes for it. ``min_steps`` overrides
    every embodiment's minimum length.
    """
    table = facts.table
    if table.empty:
        return ValidationReport(result={"success": True, "frames": 0, "suites": []})
    by_name = {e.name: e for e in embodiments}
    inferred = expected_dims(table, dims)
    failures: dict[str, list[str]] = defaultdict(list)
    suites = []
    for name, group in table.groupby("embodiment", sort=True):
        embodiment = by_name.get(name) or Embodiment(name=name)
        if min_steps is not None:
            embodiment = replace(embodiment, min_steps=min_steps)
        group = group.assign(
            expected_state_dim=embodiment.state_dim
            or group["task"].map({t: d[0] for t, d in inferred.items()}),
            expected_action_dim=embodiment.action_dim
            or group["task"].map({t: d[1] for t, d in inferred.items()}),
        )
        checks = _checks(embodiment, facts.reasons)
        suite = _run_suite(f"episodes-{name}", group, checks, [EPISODE_ID], failures)
        suites.append(
            {
                "embodiment": name,
                **suite,
                "frames": int(group["steps"].sum()),
                "episodes": len(group),
            }
        )
        cameras = facts.cameras
        cameras = cameras[cameras["embodiment"] == name] if not cameras.empty else cameras
        if not cameras.empty:
            checks = _camera_checks(embodiment, facts.camera_reasons)
            suite = _run_suite(f"cameras-{name}", cameras, checks, [EPISODE_ID, "camera"], failures)
            suites.append({"embodiment": name, **suite, "cameras": len(cameras)})
    return ValidationReport(
        failures=dict(failures),
        result={
            "success": all(s["success"] for s in suites),
            "frames": int(table["steps"].sum()),
            "episodes": len(table),
            "expected_dims": {t: list(d) for t, d in inferred.items()},
            "suites": suites,
        },
    )


def _run_suite(
    name: str,
    table: pd.DataFrame,
    checks: list[_Check],
    keys: list[str],
    failures: dict[str, list[str]],
) -> dict[str, Any]:
    """Validate ``table`` (rows named by ``keys``, the episode id first) with ``checks``; each
    failing row's reason goes to its episode's ``failures``. Returns the suite's summary."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=name, expectations=[c.expectation for c in checks])
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": table})
    index_columns = keys if len(keys) > 1 else INDEX_COLUMNS
    result = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index_columns},
    )
    rows = table.set_index(keys, drop=False)
    summary = []
    for outcome, check in zip(result.results, checks, strict=True):
        failed = sorted(
            {tuple(r[k] for k in keys) for r in outcome.result.get("unexpected_index_list") or []}
        )
        for key in failed:
            row = rows.loc[key if len(keys) > 1 else key[0]]
            failures[key[0]].append(check.describe(row.to_dict()))
        config = outcome.expectation_config
        summary.append(
            {
                "type": config.type,
                "kwargs": {k: _plain(v) for k, v in config.kwargs.items() if k != "batch_id"},
                "success": bool(outcome.success),
                "element_count": int(outcome.result.get("element_count") or 0),
                "unexpected_count": int(outcome.result.get("unexpected_count") or 0),
                "episodes": sorted({key[0] for key in failed}),
            }
        )
    return {
        "suite": suite.name,
        "success": bool(result.success),
        "statistics": {k: _plain(v) for k, v in result.statistics.items()},
        "expectations": summary,
    }


def _plain(value: Any) -> Any:
    """numpy scalars and tuples to what json.dumps takes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value
