"""The Great Expectations suite for the frames of an ingest batch.

One suite run per batch, not per file: importing and setting up Great Expectations costs
seconds. Each frame becomes one row with scalar columns derived from its vectors (their size,
whether every value is finite, time since the previous frame); failing rows map back to their
episodes through ``unexpected_index_list``, so one bad episode is quarantined with a specific
reason while the rest of the batch goes on.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

from services.features import CONTROL_SOURCES, EPISODE_ID, FRAME_INDEX

# Fewer steps than this is not an episode worth learning from.
MIN_EPISODE_STEPS = 2
# Longest plausible gap between two control steps, in seconds (0.1 Hz): larger is a bad clock.
MAX_STEP_GAP_S = 10.0
# Longest plausible episode, in seconds.
MAX_EPISODE_S = 24 * 3600.0


@dataclass(frozen=True)
class Embodiment:
    state_dim: int
    action_dim: int


@dataclass
class ValidationReport:
    # Readable reasons per failing episode id.
    failures: dict[str, list[str]] = field(default_factory=dict)
    # The suite's full result, JSON-serialisable, to store beside the ingest run.
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return not self.failures


def frame_table(episodes: list[tuple[str, Any]]) -> pd.DataFrame:
    """One row per frame of every (episode id, RawEpisode) with the columns the suite checks."""
    parts = []
    for episode_id, raw in episodes:
        t = raw.timestamps
        parts.append(
            pd.DataFrame(
                {
                    EPISODE_ID: episode_id,
                    FRAME_INDEX: np.arange(raw.steps),
                    "state_dim": raw.states.shape[1],
                    "action_dim": raw.actions.shape[1],
                    "state_finite": np.isfinite(raw.states).all(axis=1),
                    "action_finite": np.isfinite(raw.actions).all(axis=1),
                    "timestamp": t,
                    # The first frame has no predecessor: give it a gap that always passes.
                    "dt": np.r_[1.0 / raw.control_hz, np.diff(t)],
                    "control_source": raw.control_source,
                    "episode_steps": raw.steps,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _expectations(embodiment: Embodiment) -> list[tuple[Any, str]]:
    """Each expectation with the reason a failing episode is quarantined for."""
    import great_expectations as gx

    e = gx.expectations
    return [
        (
            e.ExpectColumnValuesToBeInSet(column="state_dim", value_set=[embodiment.state_dim]),
            f"observation.state size differs from the fleet's {embodiment.state_dim}",
        ),
        (
            e.ExpectColumnValuesToBeInSet(column="action_dim", value_set=[embodiment.action_dim]),
            f"action size differs from the fleet's {embodiment.action_dim}",
        ),
        (
            e.ExpectColumnValuesToBeInSet(column="state_finite", value_set=[True]),
            "observation.state has NaN or inf",
        ),
        (
            e.ExpectColumnValuesToBeInSet(column="action_finite", value_set=[True]),
            "action has NaN or inf",
        ),
        (
            e.ExpectColumnValuesToBeBetween(
                column="dt", min_value=0, strict_min=True, max_value=MAX_STEP_GAP_S
            ),
            "timestamps not strictly increasing (or a gap over 10 s)",
        ),
        (
            e.ExpectColumnValuesToBeBetween(
                column="timestamp", min_value=0, max_value=MAX_EPISODE_S
            ),
            "absurd timestamp (negative, missing or over a day into the episode)",
        ),
        (
            e.ExpectColumnValuesToBeInSet(column="control_source", value_set=list(CONTROL_SOURCES)),
            "unknown control source",
        ),
        (
            e.ExpectColumnValuesToBeBetween(column="episode_steps", min_value=MIN_EPISODE_STEPS),
            f"shorter than {MIN_EPISODE_STEPS} steps",
        ),
    ]


@cache
def _batch_definition():
    import great_expectations as gx

    # An INFO line per ephemeral context (its temporary docs site) is noise in nightly logs;
    # GX sets that module's logger to INFO itself.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    try:  # the per-metric progress bars would flood the nightly logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except (ImportError, AttributeError):  # pragma: no cover - older GX without the setting
        pass
    asset = context.data_sources.add_pandas("fleet").add_dataframe_asset("frames")
    return asset.add_batch_definition_whole_dataframe("batch")


def validate_frames(frames: pd.DataFrame, embodiment: Embodiment) -> ValidationReport:
    """Run the suite once over every frame of the batch."""
    import great_expectations as gx

    expectations = _expectations(embodiment)
    suite = gx.ExpectationSuite(name="episode-frames", expectations=[e for e, _ in expectations])
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frames})
    result = batch.validate(
        suite,
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [EPISODE_ID, FRAME_INDEX],
        },
    )
    failures: dict[str, list[str]] = defaultdict(list)
    for outcome, (_, reason) in zip(result.results, expectations, strict=True):
        if outcome.success:
            continue
        steps: dict[str, list[int]] = defaultdict(list)
        for row in outcome.result.get("unexpected_index_list") or []:
            steps[row[EPISODE_ID]].append(int(row[FRAME_INDEX]))
        for episode_id, where in steps.items():
            shown = ", ".join(map(str, where[:5])) + (" ..." if len(where) > 5 else "")
            failures[episode_id].append(f"{reason} (at {len(where)} steps: {shown})")
    summary = {
        "success": bool(result.success),
        "frames": len(frames),
        "expectations": [
            {
                "type": r.expectation_config.type,
                "column": r.expectation_config.kwargs.get("column"),
                "success": bool(r.success),
                "unexpected_count": int(r.result.get("unexpected_count") or 0),
            }
            for r in result.results
        ],
    }
    return ValidationReport(failures=dict(failures), result=summary)
