"""The `flywheel` command: thin over services/ and flows/. Every listing has --json."""

from __future__ import annotations

import getpass
import json
import sys
from dataclasses import asdict, is_dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.config import Settings, configure_runtime, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
dataset_app = typer.Typer(no_args_is_help=True, help="Dataset manifests.")
rollout_app = typer.Typer(no_args_is_help=True, help="Roll candidates out to the fleet.")
users_app = typer.Typer(no_args_is_help=True, help="Users and roles.")
app.add_typer(dataset_app, name="dataset")
app.add_typer(rollout_app, name="rollout")
app.add_typer(users_app, name="users")
# Wide enough for the nights table when the output is a file or a pipe (rich assumes 80).
console = Console(width=None if Console().is_terminal else 160)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _settings() -> Settings:
    settings = get_settings()
    configure_runtime(settings)
    return settings


def _ready() -> Settings:
    """Settings with a migrated store (every command but init may be the first one run)."""
    from services.store import migrate

    settings = _settings()
    migrate(settings.db_url)
    return settings


def _print_json(value: Any) -> None:
    def default(obj: Any) -> Any:
        if is_dataclass(obj):
            return asdict(obj)
        return str(obj)

    sys.stdout.write(json.dumps(value, indent=2, default=default) + "\n")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@app.command()
def init() -> None:
    """Create FLYWHEEL_HOME and migrate the store."""
    settings = _ready()
    console.print(
        f"Flywheel home: {settings.root}\nstore: {settings.db_url}\nmlflow: {settings.mlflow_uri}"
    )


@app.command()
def ingest(
    source: Annotated[str | None, typer.Option(help="Folder or URI of fleet logs.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ingest new fleet logs: summary of ingested, skipped and quarantined files."""
    from services.fleetlogs.ingest import ingest_logs

    settings = _ready()
    with console.status("ingesting fleet logs"):
        summary = ingest_logs(settings, source=source)
    if as_json:
        return _print_json(summary)
    console.print(
        f"ingested {summary.ingested}, skipped {summary.skipped}, "
        f"quarantined {summary.quarantined} (run {summary.run_id})"
    )
    for path, reason in summary.quarantined_files:
        console.print(f"  [yellow]quarantined[/yellow] {path}: {reason}")


@app.command()
def episodes(
    status: Annotated[str | None, typer.Option(help="ok | quarantined")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List episodes."""
    from services.fleetlogs.ingest import list_episodes

    if status not in (None, "ok", "quarantined"):
        _fail(f"--status must be ok or quarantined, not {status!r}")
    rows = list_episodes(_ready(), status=status)
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
        "source_uri",
    )
    records = [{f: getattr(r, f) for f in fields} for r in rows]
    if as_json:
        return _print_json(records)
    _table(records, fields, title=f"{len(records)} episodes")


@dataset_app.command("build")
def dataset_build(
    scheme: Annotated[str, typer.Option(help="sirius | iwr | hg-dagger | uniform")] = "sirius",
    as_json: JsonFlag = False,
) -> None:
    """Mine the episodes into a weighted, content-addressed dataset manifest."""
    from services.curation.manifest import NoEpisodesError, build_dataset

    try:
        summary = build_dataset(_ready(), scheme=scheme)
    except (NoEpisodesError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        return _print_json(summary)
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
    from services.training.candidates import train_and_register
    from services.training.config import TrainConfig

    try:
        settings = _ready()
        config = TrainConfig(steps=settings.train_steps, resume=resume, overwrite=overwrite)
        with console.status(f"training on dataset {dataset}"):
            summary = train_and_register(settings, dataset_id=dataset, config=config)
    except (LookupError, ValueError) as exc:
        _fail(str(exc))
    if as_json:
        return _print_json(summary)
    verb = "trained" if summary.trained else "already registered"
    console.print(f"candidate {summary.id} {verb}: model version {summary.model_version}")


@app.command()
def evaluate(version: str, as_json: JsonFlag = False) -> None:
    """Paired closed-loop evaluation of a candidate against its champion, and the gate."""
    from services.evaluation.gate import judge, record_verdict
    from services.evaluation.paired import evaluate_candidate

    settings = _ready()
    candidate_id = _candidate_id(settings, version)
    with console.status(f"evaluating model version {version}"):
        evaluations = evaluate_candidate(settings, candidate_id)
    verdict = record_verdict(settings.db_url, candidate_id, judge(evaluations))
    if as_json:
        return _print_json({"evaluations": evaluations, "gate": verdict})
    records = [
        {
            "task": e.task,
            "candidate": str(e.candidate),
            "champion": str(e.champion or "-"),
            "candidate only": e.candidate_only,
            "champion only": e.champion_only,
        }
        for e in evaluations
    ]
    _table(records, records[0].keys(), title=f"model version {version}")
    console.print(f"gate: [bold]{verdict.verdict}[/bold] ({verdict.reason})")


@app.command()
def candidates(as_json: JsonFlag = False) -> None:
    """Candidates with their gate verdicts and approvals."""
    from sqlalchemy import select

    from services.store import session_scope
    from services.store.models import Candidate, Decision

    settings = _ready()
    with session_scope(settings.db_url) as session:
        records = []
        for c in session.scalars(select(Candidate).order_by(Candidate.created_at)):
            decisions = {
                d.kind: d
                for d in session.scalars(select(Decision).where(Decision.candidate_id == c.id))
            }
            records.append(
                {
                    "version": c.model_version,
                    "id": c.id,
                    "parent": c.parent_version,
                    "dataset": c.dataset_id,
                    "status": c.status,
                    "gate": decisions["gate"].verdict if "gate" in decisions else None,
                    "gate_reason": decisions["gate"].reason if "gate" in decisions else None,
                    "approval": decisions["approval"].actor if "approval" in decisions else None,
                }
            )
    if as_json:
        return _print_json(records)
    _table(
        records,
        ("version", "parent", "status", "gate", "gate_reason", "approval"),
        title="candidates",
    )


def _decide(version: str, reason: str, verdict: str) -> None:
    from services.approval import decisions
    from services.store import session_scope

    settings = _ready()
    try:
        with session_scope(settings.db_url) as session:
            user = decisions.get_user(session=session, name=settings.user or getpass.getuser())
            fn = decisions.approve if verdict == "approve" else decisions.reject
            decision = fn(session=session, candidate_id=version, user=user, reason=reason)
            summary = f"{decision.verdict} candidate {decision.candidate_id} as {user.name}"
    except (decisions.PermissionDenied, decisions.DecisionConflict, LookupError, ValueError) as exc:
        _fail(str(exc))
    console.print(summary)


@app.command()
def approve(version: str, reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Approve a candidate for rollout (fleet managers only)."""
    _decide(version, reason, "approve")


@app.command()
def reject(version: str, reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Reject a candidate (fleet managers only)."""
    _decide(version, reason, "reject")


@users_app.command("add")
def users_add(
    name: str, role: Annotated[str, typer.Option(help="engineer | fleet-manager | admin")]
) -> None:
    """Add a user with a role."""
    from services.approval.decisions import DecisionConflict, add_user
    from services.store import session_scope

    try:
        with session_scope(_ready().db_url) as session:
            add_user(session=session, name=name, role=role)
    except (DecisionConflict, ValueError) as exc:
        _fail(str(exc))
    console.print(f"added {name} as {role}")


@rollout_app.command("start")
def rollout_start(version: str) -> None:
    """Roll an approved candidate out to the fleet."""
    from services.rollout.controller import RolloutError, start_rollout

    settings = _ready()
    try:
        rollout = start_rollout(
            settings, _candidate_id(settings, version), actor=settings.user or getpass.getuser()
        )
    except (RolloutError, LookupError) as exc:
        _fail(str(exc))
    console.print(
        f"rollout {rollout.id}: {rollout.from_version} -> {rollout.to_version}, {rollout.state}"
    )


@rollout_app.command("status")
def rollout_status(as_json: JsonFlag = False) -> None:
    """Rollouts, newest first, and each robot's assignment."""
    from sqlalchemy import select

    from services.rollout.assignments import fleet
    from services.rollout.controller import champion_of
    from services.store import session_scope
    from services.store.models import Rollout

    with session_scope(_ready().db_url) as session:
        rollouts = [
            {
                "id": r.id,
                "from": r.from_version,
                "to": r.to_version,
                "state": r.state,
                "stages": [s["name"] for s in r.stages],
                "reason": r.reason,
                "finished_at": r.finished_at,
            }
            for r in session.scalars(select(Rollout).order_by(Rollout.id.desc()))
        ]
        robots = [
            {"robot": r.id, "version": r.policy_version, "last_seen": r.last_seen}
            for r in fleet(session=session)
        ]
        champion = champion_of(session=session)
    if as_json:
        return _print_json({"champion": champion, "rollouts": rollouts, "robots": robots})
    console.print(f"champion: {champion}")
    _table(rollouts, ("id", "from", "to", "state", "reason"), title="rollouts")
    _table(robots, ("robot", "version", "last_seen"), title="fleet")


@rollout_app.command("rollback")
def rollout_rollback(reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Return the fleet to the champion before the last rollout."""
    from services.rollout.controller import RolloutError, rollback

    settings = _ready()
    try:
        rolled = rollback(settings, actor=settings.user or getpass.getuser(), reason=reason)
    except (RolloutError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"rolled back {rolled.to_version} -> {rolled.from_version}")


@app.command()
def lineage(
    intervention: Annotated[str | None, typer.Option(help="Intervention id.")] = None,
    model: Annotated[str | None, typer.Option(help="Model version.")] = None,
) -> None:
    """Walk lineage: a model back to its data, or an intervention forward to models (JSON)."""
    from services.lineage import intervention_lineage, model_lineage

    if (intervention is None) == (model is None):
        _fail("give exactly one of --intervention ID or --model VERSION")
    settings = _ready()
    try:
        result = (
            model_lineage(settings, model)
            if model
            else intervention_lineage(settings, intervention)
        )
    except LookupError as exc:
        _fail(str(exc))
    _print_json(result)


@app.command()
def sim(
    robots: Annotated[int, typer.Option(min=1)] = 4,
    episodes: Annotated[int, typer.Option(min=1)] = 8,
) -> None:
    """Run the simulated fleet for one shift with its assigned policies."""
    settings = _ready()  # before Prefect is imported: it reads its settings once, at import
    from flows.simulation import fleet_shift
    from services.nights import nights_completed

    result = fleet_shift.fn(nights_completed(settings), robots, episodes, lab_demos=10)
    _print_json(result)


@app.command()
def nightly(
    nights: Annotated[int, typer.Option(min=1, help="How many nights to run.")] = 1,
    robots: Annotated[int, typer.Option(min=1, help="Simulated robots.")] = 4,
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per robot per shift.")] = 12,
    simulate: Annotated[
        bool, typer.Option(help="Let the simulated fleet work a shift first.")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Run the whole loop now: the fleet's shift, then the nightly flow (N times)."""
    settings = _ready()  # before Prefect is imported: it reads its settings once, at import
    from flows.nightly import nightly as nightly_flow
    from flows.simulation import simulate_nights

    reports = []
    for night in range(1, nights + 1):
        with console.status(f"night {night} of {nights}: fleet shift, then the nightly flow"):
            if simulate:
                reports += simulate_nights(
                    nights_to_run=1, robots=robots, episodes_per_robot=episodes
                )
            else:
                reports.append(nightly_flow())
        if not as_json:
            console.print(f"night {night} of {nights}: {reports[-1].get('outcome', '')}")
    if as_json:
        return _print_json(reports)
    print_nights(reports, settings)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve the Flywheel API."""
    import uvicorn

    from services.api.main import create_app

    _ready()
    uvicorn.run(create_app(), host=host, port=port)


def print_nights(reports: list[dict], settings: Settings) -> None:
    """One row per night: the fleet's figures, then the candidate against the champion."""
    table = Table(title="Flywheel nights")
    for column in (
        "night",
        "champion",
        "fleet episodes",
        "autonomous success",
        "interventions / episode",
        "candidate",
        "candidate success",
        "champion success",
        "gate",
        "promoted",
    ):
        table.add_column(column, overflow="fold")
    notes = []
    for report in reports:
        fleet_ = report.get("fleet", {})
        cand = report.get("candidate") or {}
        n = cand.get("n") or 0
        worked = bool(fleet_.get("episodes"))
        promoted = report.get("champion_after") != report.get("champion_before")
        table.add_row(
            str(report["night"]),
            str(report.get("champion_before") or "-"),
            str(fleet_.get("episodes", 0)) if worked else "lab demos",
            f"{fleet_['autonomous_success']:.0%}" if worked else "-",
            f"{fleet_['interventions_per_episode']:.2f}" if worked else "-",
            str(cand.get("version") or "-"),
            _rate(cand.get("successes"), n),
            _rate(cand.get("champion_successes"), n),
            str(cand.get("verdict") or "-"),
            "yes" if promoted else "no",
        )
        notes.append(f"night {report['night']}: {report.get('outcome', '')}")
    console.print(table)
    for note in notes:
        console.print(note)
    worked = [r for r in reports if r.get("fleet", {}).get("episodes")]
    judged = [r["candidate"] for r in reports if (r.get("candidate") or {}).get("n")]
    if len(worked) >= 2:
        first, last = worked[0]["fleet"], worked[-1]["fleet"]
        console.print(
            f"fleet autonomous success {first['autonomous_success']:.0%} -> "
            f"{last['autonomous_success']:.0%}, interventions per episode "
            f"{first['interventions_per_episode']:.2f} -> {last['interventions_per_episode']:.2f}"
        )
    champion = reports[-1].get("champion_after") if reports else None
    current = next((c for c in judged if c["version"] == champion), None)
    if judged and current:
        console.print(
            f"closed-loop success: first policy {_rate(judged[0]['successes'], judged[0]['n'])}"
            f" -> champion v{champion} {_rate(current['successes'], current['n'])}"
        )


def _rate(k: int | None, n: int) -> str:
    from services.evaluation.stats import wilson

    return "-" if k is None or not n else str(wilson(k, n))


def _candidate_id(settings: Settings, version: str) -> str:
    from sqlalchemy import or_, select

    from services.store import session_scope
    from services.store.models import Candidate

    with session_scope(settings.db_url) as session:
        candidate_id = session.scalar(
            select(Candidate.id).where(
                or_(Candidate.model_version == version, Candidate.id == version)
            )
        )
    if candidate_id is None:
        _fail(f"no candidate with model version or id {version!r} (see `flywheel candidates`)")
    return candidate_id


def _table(records: list[dict], columns, title: str) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(str(column))
    for record in records:
        table.add_row(*("" if record[c] is None else str(record[c]) for c in columns))
    console.print(table)


def main() -> None:
    app()
