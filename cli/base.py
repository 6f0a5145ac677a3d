"""Shared pieces of the `flywheel` command: the Typer apps, settings, output helpers."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, is_dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import or_, select

from services.config import Settings, configure_runtime
from services.evaluation.stats import wilson
from services.run_settings import load_run_settings
from services.runtime.dependencies import DependencyUnavailable, check_database
from services.store import migrate, session_scope
from services.store.models import Candidate

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Flywheel: the continuous-learning data flywheel for robot fleets.",
)
dataset_app = typer.Typer(no_args_is_help=True, help="Dataset manifests.")
rollout_app = typer.Typer(no_args_is_help=True, help="Roll candidates out to the fleet.")
users_app = typer.Typer(no_args_is_help=True, help="Users and roles.")
episodes_app = typer.Typer(help="List episodes (with no command), or delete them.")
retention_app = typer.Typer(no_args_is_help=True, help="Remove data older than its age.")
robots_app = typer.Typer(no_args_is_help=True, help="Robots and their credentials.")
app.add_typer(dataset_app, name="dataset")
app.add_typer(episodes_app, name="episodes")
app.add_typer(retention_app, name="retention")
app.add_typer(rollout_app, name="rollout")
app.add_typer(users_app, name="users")
app.add_typer(robots_app, name="robots")
# Wide enough for the nights table when the output is a file or a pipe (rich assumes 80).
console = Console(width=None if Console().is_terminal else 160)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def load_settings() -> Settings:
    """The environment's settings, checked against the registries (an unknown scheme fails here)."""
    settings = load_run_settings()
    configure_runtime(settings)
    return settings


def ready() -> Settings:
    """Settings with a migrated store (every command but init may be the first one run).

    It also points Prefect at FLYWHEEL_HOME (configure_runtime): Prefect reads its settings
    once, when it is imported, so a command imports the flows only after calling this.
    """
    try:
        settings = load_settings()
    except ValueError as exc:  # pydantic's validation error: a setting is wrong
        fail(f"invalid settings: {exc}")
    try:
        check_database(settings)
    except DependencyUnavailable as exc:
        fail(str(exc))
    migrate(settings.db_url)
    return settings


def print_json(value: Any) -> None:
    def default(obj: Any) -> Any:
        if is_dataclass(obj):
            return asdict(obj)
        return str(obj)

    sys.stdout.write(json.dumps(value, indent=2, default=default) + "\n")


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


def format_rate(k: int | None, n: int) -> str:
    return "-" if k is None or not n else str(wilson(k, n))


def resolve_candidate(settings: Settings, version: str) -> str:
    with session_scope(settings.db_url) as session:
        candidate_id = session.scalar(
            select(Candidate.id).where(
                or_(Candidate.model_version == version, Candidate.id == version)
            )
        )
    if candidate_id is None:
        fail(f"no candidate with model version or id {version!r} (see `flywheel candidates`)")
    return candidate_id


def print_table(records: list[dict], columns, title: str) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(str(column))
    for record in records:
        table.add_row(*("" if record[c] is None else str(record[c]) for c in columns))
    console.print(table)
