"""Commands that remove data: `flywheel episodes delete` and `flywheel retention apply`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from cli.base import JsonFlag, console, episodes_app, fail, print_json, ready, retention_app
from cli.people import Refused, admin_actor
from services.curation.deletion import DeletionError, DeletionReport, delete_episodes
from services.curation.retention import apply_retention

TimeOption = Annotated[
    str | None, typer.Option(help="ISO 8601 date or time; UTC unless it has an offset.")
]


@episodes_app.command("delete")
def episodes_delete(
    reason: Annotated[str, typer.Option(help="Why (the audit log and tombstones keep it).")],
    robot: Annotated[
        list[str] | None, typer.Option(help="Episodes of this robot (repeatable).")
    ] = None,
    since: TimeOption = None,
    until: TimeOption = None,
    ids: Annotated[str | None, typer.Option(help="Episode ids, comma-separated.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would go; change nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete episodes by robot, recording time ([--since, --until)) or ids: their frames,
    their index rows and their place in future datasets; a tombstone keeps their logs from
    being ingested again. Selectors given together must all match."""
    start, end = _moment(since, "--since"), _moment(until, "--until")
    settings = ready()
    try:
        actor = admin_actor(settings, "delete episodes")
    except Refused as exc:
        fail(str(exc))
    try:
        report = delete_episodes(
            settings,
            reason=reason,
            actor=actor,
            robots=robot or (),
            since=start,
            until=end,
            ids=[i.strip() for i in (ids or "").split(",") if i.strip()],
            dry_run=dry_run,
        )
    except DeletionError as exc:
        fail(str(exc))
    if as_json:
        return print_json(report)
    print_deletion(report)


@retention_app.command("apply")
def retention_apply(
    dry_run: Annotated[bool, typer.Option(help="Say what would go; change nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove raw uploads and episodes older than FLYWHEEL_RETENTION_RAW_DAYS and
    FLYWHEEL_RETENTION_EPISODE_DAYS (the deployed flow runs this daily)."""
    report = apply_retention(ready(), dry_run=dry_run)
    if as_json:
        return print_json(report)
    verb = "would remove" if dry_run else "removed"
    if report.raw_days is None and report.episode_days is None:
        console.print(
            "retention is off: set FLYWHEEL_RETENTION_RAW_DAYS and/or "
            "FLYWHEEL_RETENTION_EPISODE_DAYS"
        )
        return None
    if report.raw_days is not None:
        console.print(
            f"raw uploads older than {report.raw_days:g} days: {verb} {len(report.raw_removed)}"
        )
    if report.episode_days is not None:
        console.print(
            f"episodes older than {report.episode_days:g} days: kept "
            f"{len(report.kept_for_champion)} the champion's lineage was trained on"
        )
        if report.episodes is None:
            console.print("  none to delete")
        else:
            print_deletion(report.episodes)


def print_deletion(report: DeletionReport) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    robots = ", ".join(f"{robot}: {n}" for robot, n in report.robots.items())
    console.print(
        f"{verb} {len(report.episode_ids)} episodes ({robots or 'none'}); reason: {report.reason}",
        highlight=False,
    )
    if report.already_deleted:
        console.print(f"  already deleted before: {', '.join(report.already_deleted)}")
    files = ", ".join(report.data_files) or "none"
    console.print(f"  data files {'to rewrite' if report.dry_run else 'rewritten'}: {files}")
    mark = "to be marked" if report.dry_run else "now marked"
    if report.datasets:
        console.print(f"  datasets that used them, {mark} no longer reproducible:")
        for dataset in report.datasets:
            console.print(f"    {dataset}", highlight=False)
    else:
        console.print("  no dataset used them")
    if report.models:
        console.print("  models trained on them:")
        for model in report.models:
            champion = ", champion" if model.champion else ""
            console.print(
                f"    version {model.model_version or '-'} (candidate {model.candidate_id}, "
                f"{model.status}{champion}) via {model.via}",
                highlight=False,
            )
    else:
        console.print("  no model was trained on them")
    if not report.dry_run and report.episode_ids:
        console.print(
            "  tombstones left: ingesting their logs again will not bring them back; the "
            "fleet's log files themselves are removed by FLYWHEEL_RETENTION_RAW_DAYS"
        )


def _moment(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r} is not an ISO 8601 date or time (e.g. 2026-11-30T18:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
