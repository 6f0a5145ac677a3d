"""The Great Expectations suite for the frames of an ingest batch.

One suite run per batch, not per file: importing Great Expectations costs seconds, so it is
imported and its context set up lazily, once per process. Each frame becomes one row with
scalar columns derived from its vectors (their size, whether every value is finite, time since
the previous frame of its episode); failing rows map back to their episode and step through
``unexpected_index_list``, so one bad episode is quarantined with a specific reason while the
rest of the batch goes on.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from services.features import CONTROL_SOURCE, CONTROL_SOURCES, EPISODE_ID, FRAME_INDEX, TIMESTAMP

if TYPE_CHECKING:
    from services.fleetlogs.mcap_reader import RawEpisode

# Fewer steps than this is not an episode worth learning from (nothing to predict).
MIN_EPISODE_STEPS = 2
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
    # Summary of the suite's result, JSON-serialisable, to store beside the ingest run.
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.failures

    def reason(self, episode_id: str) -> str | None:
        reasons = self.failures.get(episode_id)
        return "; ".join(reasons) if reasons else None


def frame_table(episodes: Iterable[tuple[str, RawEpisode]]) -> pd.DataFrame:
    """One row per frame of every (episode id, RawEpisode), with the columns the suite checks."""
    columns: dict[str, list] = defaultdict(list)
    for episode_id, raw in episodes:
        n = raw.steps
        columns[EPISODE_ID].append(np.full(n, episode_id, dtype=object))
        columns[FRAME_INDEX].append(np.arange(n))
        columns["task"].append(np.full(n, raw.task, dtype=object))
        columns["state_dim"].append(np.full(n, raw.states.shape[1]))
        columns["action_dim"].append(np.full(n, raw.actions.shape[1]))
        columns["state_finite"].append(np.isfinite(raw.states).all(axis=1))
        columns["action_finite"].append(np.isfinite(raw.actions).all(axis=1))
        columns[TIMESTAMP].append(raw.timestamps)
        # The first frame has no predecessor: NaN, which the range checks skip.
        columns["dt"].append(np.r_[np.nan, np.diff(raw.timestamps)])
        columns[CONTROL_SOURCE].append(np.asarray(raw.control_source, dtype=object))
        columns["episode_steps"].append(np.full(n, n))
    if not columns:
        return pd.DataFrame(columns=[*INDEX_COLUMNS, "state_dim", "action_dim"])
    return pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})


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


def _checks(min_steps: int) -> list[_Check]:
    import great_expectations as gx

    e = gx.expectations

    def between(column: str, **bounds) -> Any:
        return e.ExpectColumnValuesToBeBetween(column=column, **bounds)

    return [
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
            e.ExpectColumnValuesToBeInSet(column=CONTROL_SOURCE, value_set=list(CONTROL_SOURCES)),
            lambda r: f"unknown control source {r[0][CONTROL_SOURCE]!r} {_where(r)}",
        ),
        _Check(
            between("episode_steps", min_value=min_steps),
            lambda r: f"too short: {r[0]['episode_steps']} steps, fewer than {min_steps}",
        ),
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


def validate_frames(
    frames: pd.DataFrame,
    *,
    dims: Mapping[str, tuple[int, int]] | None = None,
    min_steps: int = MIN_EPISODE_STEPS,
) -> ValidationReport:
    """Run the suite once over every frame of the batch (see ``frame_table``).

    ``dims`` gives the expected (state_dim, action_dim) per task, such as the episode
    store's; a task it does not name must agree with the batch's most common sizes for it.
    """
    if frames.empty:
        return ValidationReport(result={"success": True, "frames": 0, "expectations": []})
    import great_expectations as gx

    expected = expected_dims(frames, dims)
    frames = frames.assign(
        expected_state_dim=frames["task"].map(lambda t: expected[t][0]),
        expected_action_dim=frames["task"].map(lambda t: expected[t][1]),
    )
    checks = _checks(min_steps)
    suite = gx.ExpectationSuite(name="episode-frames", expectations=[c.expectation for c in checks])
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frames})
    result = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": INDEX_COLUMNS},
    )
    failures: dict[str, list[str]] = defaultdict(list)
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
    return ValidationReport(
        failures=dict(failures),
        result={
            "success": bool(result.success),
            "frames": len(frames),
            "episodes": int(frames[EPISODE_ID].nunique()),
            "expected_dims": {t: list(d) for t, d in expected.items()},
            "statistics": {k: _plain(v) for k, v in result.statistics.items()},
            "expectations": summary,
        },
    )


def _plain(value: Any) -> Any:
    """numpy scalars and tuples to what json.dumps takes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    return value
