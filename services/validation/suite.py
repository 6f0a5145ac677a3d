"""The Great Expectations suites for the frames of an ingest batch, one per embodiment.

One run per embodiment per batch, not per file: importing Great Expectations costs seconds, so
it is imported and its context set up lazily, once per process. Each frame becomes one row with
scalar columns derived from its vectors (their size, whether every value is finite and inside
the embodiment's ranges, time since the previous frame of its episode); failing rows map back
to their episode and step through ``unexpected_index_list``, so one bad episode is quarantined
with a specific reason while the rest of the batch goes on.

An embodiment (``embodiment.py``) sets the suite's parameters: state and action sizes, value
ranges (joint limits), minimum length, and which control sources it may log. Checks every suite
has: finite values, timestamps present, plausible and strictly increasing.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from services.features import CONTROL_SOURCE, CONTROL_SOURCES, EPISODE_ID, FRAME_INDEX, TIMESTAMP
from services.validation.embodiment import Embodiment, embodiment_for

if TYPE_CHECKING:
    from services.fleetlogs.mcap_reader import RawEpisode

# Longest plausible gap between two control steps, in seconds (0.1 Hz): larger is a bad clock.
MAX_STEP_GAP_S = 10.0
# Longest plausible episode, in seconds.
MAX_EPISODE_S = 24 * 3600.0
# Columns that locate a failing frame: its episode, its step, and its task for the message.
INDEX_COLUMNS = [EPISODE_ID, FRAME_INDEX, "task"]
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


def frame_table(
    episodes: Iterable[tuple[str, RawEpisode]], embodiments: Sequence[Embodiment] = ()
) -> pd.DataFrame:
    """One row per frame of every (episode id, RawEpisode), with the columns the suites check."""
    episodes = list(episodes)
    if not episodes:
        return pd.DataFrame(columns=[*INDEX_COLUMNS, "embodiment", "state_dim", "action_dim"])
    columns: dict[str, list] = defaultdict(list)
    lengths = np.array([raw.steps for _, raw in episodes], dtype=np.int64)
    for _, raw in episodes:
        embodiment = embodiment_for(embodiments, raw.robot_id, raw.task)
        columns["embodiment"].append(embodiment.name)
        columns["state_finite"].append(np.isfinite(raw.states).all(axis=1))
        columns["action_finite"].append(np.isfinite(raw.actions).all(axis=1))
        columns["state_in_range"].append(_in_range(raw.states, embodiment.state_range))
        columns["action_in_range"].append(_in_range(raw.actions, embodiment.action_range))
        columns[TIMESTAMP].append(raw.timestamps)
        # The first frame has no predecessor: NaN, which the range checks skip.
        columns["dt"].append(np.r_[np.nan, np.diff(raw.timestamps)])
        columns[CONTROL_SOURCE].append(np.asarray(raw.control_source, dtype=object))

    def per_episode(values: list) -> np.ndarray:
        """One value per episode, on each of its frames (categorical: a few distinct values)."""
        return np.repeat(np.asarray(values, dtype=object), lengths)

    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    return pd.DataFrame(
        {
            EPISODE_ID: per_episode([episode_id for episode_id, _ in episodes]),
            FRAME_INDEX: np.arange(lengths.sum()) - np.repeat(starts, lengths),
            "task": per_episode([raw.task for _, raw in episodes]),
            "embodiment": per_episode(columns.pop("embodiment")),
            "state_dim": np.repeat([raw.states.shape[1] for _, raw in episodes], lengths),
            "action_dim": np.repeat([raw.actions.shape[1] for _, raw in episodes], lengths),
            **{name: np.concatenate(parts) for name, parts in columns.items()},
            "episode_steps": np.repeat(lengths, lengths),
        }
    )


def _in_range(values: np.ndarray, bounds) -> np.ndarray:
    """Per row: no value outside (low, high). NaN is not out of range: the finite check has it."""
    if bounds is None:
        return np.ones(len(values), dtype=bool)
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    if values.shape[1:] and low.shape and low.shape[0] != values.shape[1]:
        return np.ones(len(values), dtype=bool)  # the size check reports this episode
    return ~((values < low) | (values > high)).any(axis=1)


def expected_dims(
    frames: pd.DataFrame, known: Mapping[str, tuple[int, int]] | None = None
) -> dict[str, tuple[int, int]]:
    """(state_dim, action_dim) per task: the known ones, else the batch's most common."""
    result = dict(known or {})
    per_episode = frames.drop_duplicates(EPISODE_ID)
    for task, group in per_episode.groupby("task"):
        if task not in result:
            counts = Counter(zip(group["state_dim"], group["action_dim"], strict=True))
            result[task] = tuple(map(int, counts.most_common(1)[0][0]))
    return result


@dataclass(frozen=True)
class _Check:
    expectation: Any
    # Builds the reason from the failing rows of one episode (index columns and tested values).
    describe: Callable[[list[dict]], str]


def _where(rows: list[dict]) -> str:
    steps = sorted(int(r[FRAME_INDEX]) for r in rows)
    if len(steps) == 1:
        return f"at step {steps[0]}"
    shown = ", ".join(map(str, steps[:SHOWN_STEPS])) + (", ..." if len(steps) > SHOWN_STEPS else "")
    return f"at {len(steps)} steps ({shown})"


def _range_text(bounds) -> str:
    low, high = bounds
    if isinstance(low, Sequence):
        return "its per-dimension limits"
    return f"[{low:g}, {high:g}]"


def _source_text(source: str, embodiment: Embodiment) -> str:
    if source in CONTROL_SOURCES:
        return f"control source {source!r} not allowed for embodiment {embodiment.name}"
    return f"unknown control source {source!r}"


def _checks(embodiment: Embodiment) -> list[_Check]:
    import great_expectations as gx

    e = gx.expectations

    def between(column: str, **bounds) -> Any:
        return e.ExpectColumnValuesToBeBetween(column=column, **bounds)

    checks = [
        _Check(
            e.ExpectColumnPairValuesToBeEqual(column_A="state_dim", column_B="expected_state_dim"),
            lambda r: (
                f"observation.state has {r[0]['state_dim']} values, expected "
                f"{r[0]['expected_state_dim']} for task {r[0]['task']}"
            ),
        ),
        _Check(
            e.ExpectColumnPairValuesToBeEqual(
                column_A="action_dim", column_B="expected_action_dim"
            ),
            lambda r: (
                f"action has {r[0]['action_dim']} values, expected "
                f"{r[0]['expected_action_dim']} for task {r[0]['task']}"
            ),
        ),
        _Check(
            e.ExpectColumnValuesToBeInSet(column="state_finite", value_set=[True]),
            lambda r: f"observation.state has NaN/inf {_where(r)}",
        ),
        _Check(
            e.ExpectColumnValuesToBeInSet(column="action_finite", value_set=[True]),
            lambda r: f"action has NaN/inf {_where(r)}",
        ),
        _Check(
            e.ExpectColumnValuesToNotBeNull(column=TIMESTAMP),
            lambda r: f"timestamp missing or NaN {_where(r)}",
        ),
        _Check(
            between(TIMESTAMP, min_value=0, max_value=MAX_EPISODE_S),
            lambda r: (
                f"absurd timestamp (negative or over {MAX_EPISODE_S / 3600:.0f} h into "
                f"the episode) {_where(r)}"
            ),
        ),
        _Check(
            between("dt", min_value=0, strict_min=True),
            lambda r: f"timestamps go backwards or repeat {_where(r)}",
        ),
        _Check(
            between("dt", max_value=MAX_STEP_GAP_S),
            lambda r: f"clock jumps over {MAX_STEP_GAP_S:g} s between steps {_where(r)}",
        ),
        _Check(
            e.ExpectColumnValuesToBeInSet(
                column=CONTROL_SOURCE, value_set=list(embodiment.control_sources)
            ),
            lambda r: _source_text(r[0][CONTROL_SOURCE], embodiment) + f" {_where(r)}",
        ),
        _Check(
            between("episode_steps", min_value=embodiment.min_steps),
            lambda r: (
                f"too short: {r[0]['episode_steps']} steps, fewer than {embodiment.min_steps}"
            ),
        ),
    ]
    for column, feature, bounds in (
        ("state_in_range", "observation.state", embodiment.state_range),
        ("action_in_range", "action", embodiment.action_range),
    ):
        if bounds is not None:
            text = _range_text(bounds)
            checks.append(
                _Check(
                    e.ExpectColumnValuesToBeInSet(column=column, value_set=[True]),
                    lambda r, feature=feature, text=text: (
                        f"{feature} outside {text} of embodiment {embodiment.name} {_where(r)}"
                    ),
                )
            )
    return checks


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


def validate_frames(
    frames: pd.DataFrame,
    *,
    dims: Mapping[str, tuple[int, int]] | None = None,
    embodiments: Sequence[Embodiment] = (),
    min_steps: int | None = None,
) -> ValidationReport:
    """Run each embodiment's suite once over its frames of the batch (see ``frame_table``).

    An embodiment's sizes are expected where it sets them; otherwise ``dims`` gives the
    expected (state_dim, action_dim) per task, such as the episode store's, and a task it does
    not name must agree with the batch's most common sizes for it. ``min_steps`` overrides
    every embodiment's minimum length.
    """
    if frames.empty:
        return ValidationReport(result={"success": True, "frames": 0, "suites": []})
    import great_expectations as gx

    by_name = {e.name: e for e in embodiments}
    inferred = expected_dims(frames, dims)
    failures: dict[str, list[str]] = defaultdict(list)
    suites = []
    for name, group in frames.groupby("embodiment", sort=True):
        embodiment = by_name.get(name) or Embodiment(name=name)
        if min_steps is not None:
            embodiment = replace(embodiment, min_steps=min_steps)
        group = group.assign(
            expected_state_dim=embodiment.state_dim
            or group["task"].map({t: d[0] for t, d in inferred.items()}),
            expected_action_dim=embodiment.action_dim
            or group["task"].map({t: d[1] for t, d in inferred.items()}),
        )
        checks = _checks(embodiment)
        suite = gx.ExpectationSuite(
            name=f"episode-frames-{name}", expectations=[c.expectation for c in checks]
        )
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": group})
        result = batch.validate(
            suite,
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": INDEX_COLUMNS,
            },
        )
        summary = []
        for outcome, check in zip(result.results, checks, strict=True):
            rows_by_episode: dict[str, list[dict]] = defaultdict(list)
            for row in outcome.result.get("unexpected_index_list") or []:
                rows_by_episode[row[EPISODE_ID]].append(row)
            for episode_id, rows in rows_by_episode.items():
                failures[episode_id].append(check.describe(rows))
            config = outcome.expectation_config
            summary.append(
                {
                    "type": config.type,
                    "kwargs": {k: _plain(v) for k, v in config.kwargs.items() if k != "batch_id"},
                    "success": bool(outcome.success),
                    "element_count": int(outcome.result.get("element_count") or 0),
                    "unexpected_count": int(outcome.result.get("unexpected_count") or 0),
                    "episodes": sorted(rows_by_episode),
                }
            )
        suites.append(
            {
                "embodiment": name,
                "suite": suite.name,
                "success": bool(result.success),
                "frames": len(group),
                "episodes": int(group[EPISODE_ID].nunique()),
                "statistics": {k: _plain(v) for k, v in result.statistics.items()},
                "expectations": summary,
            }
        )
    return ValidationReport(
        failures=dict(failures),
        result={
            "success": all(s["success"] for s in suites),
            "frames": len(frames),
            "episodes": int(frames[EPISODE_ID].nunique()),
            "expected_dims": {t: list(d) for t, d in inferred.items()},
            "suites": suites,
        },
    )


def _plain(value: Any) -> Any:
    """numpy scalars and tuples to what json.dumps takes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value
