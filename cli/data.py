"""Commands over the data: init, ingest, episodes, export, datasets, training, lineage."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from cli.base import (
    JsonFlag,
    app,
    console,
    dataset_app,
    episodes_app,
    fail,
    print_json,
    print_table,
    ready,
)
from cli.progress import Stages
from services.curation.manifest import NoEpisodesError, build_manifest
from services.episode_store.card import UNSTATED_LICENSE
from services.episode_store.export import MixedRatesError, export_lerobot
from services.episode_store.index import list_episodes
from services.ingest.batch import ingest_logs
from services.ingest.mapping import MappingError, load_mapping
from services.readmodel.lineage import intervention_lineage, model_lineage
from services.registry.mlflow_registry import code_version
from services.training.config import TrainConfig
from services.validation.embodiment import robot_type


@app.command()
def init() -> None:
    """Create FLYWHEEL_HOME and migrate the store."""
    settings = ready()
    console.print(
        f"Flywheel home: {settings.root}\nstore: {settings.db_url}\nmlflow: {settings.mlflow_uri}"
    )


@app.command()
def ingest(
    source: Annotated[
        str | None, typer.Option(help="Folder or URI (file://, s3://) of fleet logs.")
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(help="The fleet's mapping file (YAML/TOML): topics, embodiments."),
    ] = None,
    retry_quarantined: Annotated[
        bool,
        typer.Option(
            "--retry-quarantined",
            help="Read quarantined uploads again (after fixing the mapping); the audit log "
            "keeps their earlier reasons.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Ingest new fleet logs: MCAP, ROS 1/2 bags, LeRobot v3.0 datasets, robomimic HDF5."""
    try:
        fleet = load_mapping(mapping)
    except MappingError as exc:
        fail(str(exc))
    settings = ready()
    with Stages() as stages, stages.stage("ingest-logs"):
        summary = ingest_logs(
            settings, source=source, mapping=fleet, retry_quarantined=retry_quarantined
        )
    if as_json:
        return print_json(summary)
    console.print(
        f"ingested {summary.ingested}, skipped {summary.skipped}, "
        f"quarantined {summary.quarantined}, tombstoned {summary.tombstoned}, "
        f"duplicates {summary.duplicates} (run {summary.run_id})"
    )
    for path, reason in summary.quarantined_files:
        console.print(f"  [yellow]quarantined[/yellow] {path}: {reason}")


@episodes_app.callback(invoke_without_command=True)
def episodes(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="ok | quarantined | duplicate")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List episodes (`flywheel episodes delete` deletes them)."""
    if ctx.invoked_subcommand is not None:
        return None
    if status not in (None, "ok", "quarantined", "duplicate"):
        fail(f"--status must be ok, quarantined or duplicate, not {status!r}")
    rows = list_episodes(ready(), status=status)
    fields = (
        "id",
        "robot_id",
        "task",
        "policy_version",
        "kind",
        "steps",
        "outcome",
        "n_interventions",
        "status",
        "reason",
        "duplicate_of",
        "source_uri",
    )
    records = [{f: getattr(r, f) for f in fields} for r in rows]
    if as_json:
        return print_json(records)
    if status == "quarantined":  # the reasons in full: a table column would cut them to shreds
        console.print(f"{len(rows)} quarantined episodes")
        for row in rows:
            console.print(f"  {row.id}  {row.source_uri} ({row.source_format})", highlight=False)
            console.print(f"    [yellow]{escape(row.reason or '')}[/yellow]", highlight=False)
        return None
    print_table(records, fields, title=f"{len(records)} episodes")


@app.command()
def export(
    destination: Annotated[Path, typer.Argument(help="New folder for the LeRobot v3.0 dataset.")],
    task: Annotated[list[str] | None, typer.Option(help="Only this task (repeatable).")] = None,
    robot: Annotated[list[str] | None, typer.Option(help="Only this robot (repeatable).")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="demo | deployment (repeatable).")] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(help="The fleet's mapping file: its embodiments name the robot type."),
    ] = None,
    license: Annotated[
        str, typer.Option(help="The data's license for the dataset card (e.g. cc-by-4.0).")
    ] = UNSTATED_LICENSE,
    as_json: JsonFlag = False,
) -> None:
    """Export the ingested episodes as a LeRobot v3.0 dataset, with a dataset card."""
    try:
        fleet = load_mapping(mapping)
    except MappingError as exc:
        fail(str(exc))
    try:
        summary = export_lerobot(
            ready(),
            destination,
            tasks=task,
            robots=robot,
            kinds=kind,
            robot_type=partial(robot_type, fleet.embodiments),
            code_version=code_version(),
            license=license,
        )
    except (FileExistsError, LookupError, MixedRatesError) as exc:
        fail(str(exc))
    if as_json:
        return print_json(summary)
    console.print(
        f"exported {summary.episodes} episodes, {summary.frames} frames "
        f"({summary.data_files} data files) to {summary.path}"
    )


@dataset_app.command("build")
def dataset_build(
    scheme: Annotated[
        str | None,
        typer.Option(help="sirius | iwr | hg-dagger | uniform (default: FLYWHEEL_SCHEME)."),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Memory cap (default: FLYWHEEL_DATASET_MAX_STEPS).")
    ] = None,
    replay: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.99,
            help="Share of steps replayed from episodes the champion has seen "
            "(default: FLYWHEEL_REPLAY_SHARE; unset: all of them).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Mine the episodes into a weighted, content-addressed dataset manifest."""
    try:
        settings = ready()
        with Stages() as stages, stages.stage("build-dataset"):
            summary = build_manifest(
                settings,
                scheme=scheme or settings.curation.scheme,
                max_steps=max_steps or settings.curation.dataset_max_steps,
                replay=settings.curation.replay_share if replay is None else replay,
            )
    except (NoEpisodesError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        return print_json(summary)
    state = "new" if summary.created else "unchanged"
    console.print(
        f"dataset {summary.id} ({state}): {summary.n_episodes} episodes "
        f"({summary.n_new_episodes} new), {summary.n_steps} steps, "
        f"replay share {summary.replay_share:.0%}, classes {summary.class_counts}"
    )


@app.command()
def train(
    dataset: Annotated[str, typer.Option(help="Dataset id from `flywheel dataset build`.")],
    resume: bool = False,
    overwrite: bool = False,
    as_json: JsonFlag = False,
) -> None:
    """Fine-tune the champion on a dataset and register the candidate."""
    # torch comes with the training stage: imported here, not at start-up (`flywheel --help`).
    from services.training.stage import train_and_register

    try:
        settings = ready()
        config = TrainConfig.from_settings(settings.training, resume=resume, overwrite=overwrite)
        with Stages() as stages, stages.stage(f"train-candidate on dataset {dataset}"):
            summary = train_and_register(settings, dataset_id=dataset, config=config)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        return print_json(summary)
    verb = "trained" if summary.trained else "already registered"
    console.print(f"candidate {summary.id} {verb}: model version {summary.model_version}")


@app.command()
def lineage(
    intervention: Annotated[str | None, typer.Option(help="Intervention id.")] = None,
    model: Annotated[str | None, typer.Option(help="Model version.")] = None,
) -> None:
    """Walk lineage: a model back to its data, or an intervention forward to models (JSON)."""
    if (intervention is None) == (model is None):
        fail("give exactly one of --intervention ID or --model VERSION")
    settings = ready()
    try:
        result = (
            model_lineage(settings, model)
            if model
            else intervention_lineage(settings, intervention)
        )
    except LookupError as exc:
        fail(str(exc))
    print_json(result)
