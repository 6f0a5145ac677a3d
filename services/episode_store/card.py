"""The dataset card (README.md) of an export: Hugging Face's style, YAML front matter, then
where the data came from, so that a dataset found on its own says its origin."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from importlib.metadata import version

import yaml

from services.store.models import Episode

# The card's license when the exporter names none (Hugging Face's value for "see the card").
UNSTATED_LICENSE = "other"


def dataset_card(
    info: dict,
    rows: list[Episode],
    *,
    code_version: str | None,
    license: str,
    filters: dict[str, list[str] | None],
) -> str:
    """README.md for the exported dataset: YAML front matter, then where the data came from."""
    robot_type = info.get("robot_type")
    cameras = [k for k, v in info["features"].items() if v.get("dtype") == "video"]
    front = {
        "license": license,
        "task_categories": ["robotics"],
        "tags": ["LeRobot", "flywheel", *([robot_type] if robot_type else [])],
        "configs": [{"config_name": "default", "data_files": "data/*/*.parquet"}],
    }
    started = sorted(r.started_at for r in rows if r.started_at is not None)
    made = f"Flywheel {version('flywheel')}" + (f" (code {code_version})" if code_version else "")
    chosen = [f"{k} in {', '.join(v)}" for k, v in filters.items() if v]
    by_source = Counter((r.source_format, r.source_uri.rsplit("/", 1)[0]) for r in rows)
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {info['total_episodes']} robot episodes exported by Flywheel",
        "",
        f"A LeRobot {info['codebase_version']} dataset, exported by {made} on "
        f"{datetime.now(UTC):%Y-%m-%d} from its episode store"
        + (f" ({'; '.join(chosen)})." if chosen else " (every ingested episode)."),
        "",
        "## Where the data came from",
        "",
        "| source format | location | episodes |",
        "| --- | --- | --- |",
        *(f"| {fmt} | `{where}` | {n} |" for (fmt, where), n in sorted(by_source.items())),
        "",
        f"- Robots: {_counts(r.robot_id for r in rows)}",
        f"- Robot type (embodiment): {robot_type or 'not declared'}",
        f"- Recorded: {_dates(started)}",
        f"- Tasks: {_counts(r.task for r in rows)}",
        f"- Kinds: {_counts(r.kind for r in rows)}",
        f"- Outcomes: {_counts(r.outcome for r in rows)}",
        f"- Episodes: {info['total_episodes']}; frames: {info['total_frames']}; "
        f"fps: {info['fps']}; cameras: {', '.join(cameras) or 'none'}",
        "",
        "## Flywheel's columns",
        "",
        "Besides LeRobot's, each frame has `episode_id` (Flywheel's id of the episode), "
        "`control_source` (policy or operator), `intervention` (an operator took over a "
        "deployment), `policy_version` and `robot_id`; each row of `meta/episodes` has the "
        "episode's `kind` (demo or deployment), `outcome`, `fps`, and `state_names` / "
        "`action_names` where the log named its values.",
        "",
        "## License",
        "",
        f"`{license}`"
        + (
            " (the exporter named none: ask the fleet's owner)"
            if license == UNSTATED_LICENSE
            else ""
        ),
        "",
    ]
    return "\n".join(lines)


def _counts(values) -> str:
    return ", ".join(f"{k} ({n})" for k, n in sorted(Counter(values).items(), key=str))


def _dates(started: list[datetime]) -> str:
    if not started:
        return "unknown"
    return f"{started[0]:%Y-%m-%d} to {started[-1]:%Y-%m-%d}"
