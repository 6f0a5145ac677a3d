"""Commands that run the loop: the simulated fleet, nights, the API server, notifications."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn
from rich.table import Table

from cli.base import (
    JsonFlag,
    app,
    console,
    fail,
    format_rate,
    load_settings,
    print_json,
    ready,
)
from cli.progress import Stages
from flows.progress import listening
from services.config import Settings
from services.nights import nights_completed, rollout_outcomes
from services.notify.courier import Notifier, deliver_pending
from services.notify.outbox import counts as notification_counts
from services.readmodel.rollouts import rollouts_overview
from services.rollout.controller import start_rollout
from services.runtime.dependencies import DependencyUnavailable, check_database, wait_for
from services.runtime.stack import Stack, StackError, status
from services.runtime.stack import down as stop
from services.runtime.stack import up as start
from services.store import session_scope
from sim.fleet import FleetConfig, robot_ids

# Imported inside the commands that use them, and only those: the flows, after ready()
# (Prefect reads its settings, PREFECT_HOME..., once when it is imported, and ready() points
# them at FLYWHEEL_HOME), and the modules that import torch (policies: the API's robot
# routes, the drill), which would add a second to every start-up, `flywheel --help` too.


@app.command()
def sim(
    robots: Annotated[int, typer.Option(min=1)] = 4,
    episodes: Annotated[int, typer.Option(min=1)] = 8,
) -> None:
    """Run the simulated fleet for one shift with its assigned policies."""
    settings = ready()
    from flows.simulation import fleet_shift

    with Stages() as stages, stages.stage("fleet-shift"):
        result = fleet_shift.fn(
            settings, nights_completed(settings), robots, episodes, lab_demos=10
        )
    print_json(result)


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
    settings = ready()
    from flows.nightly import nightly as nightly_flow
    from flows.simulation import simulate_nights

    reports = []
    for night in range(1, nights + 1):
        # One display per night, closed before the night's line goes to stdout.
        with Stages(f"night {night} of {nights}: ") as stages, listening(stages):
            if simulate:
                reports += simulate_nights(
                    nights_to_run=1, robots=robots, episodes_per_robot=episodes, settings=settings
                )
            else:
                reports.append(nightly_flow(settings))
        if not as_json:
            console.print(f"night {night} of {nights}: {reports[-1].get('outcome', '')}")
        if reports[-1].get("in_progress"):
            break  # another nightly run holds the fleet: it reported why
    if as_json:
        return print_json(reports)
    ran = [r for r in reports if not r.get("in_progress")]
    if ran:
        print_nights(ran, settings)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Default: FLYWHEEL_API_PORT (8470).")] = None,
    wait_attempts: Annotated[
        int, typer.Option(min=1, help="Tries to reach the database before giving up.")
    ] = 10,
) -> None:
    """Serve the Flywheel API."""
    from services.api.main import create_app, settle_heap  # torch: see the note at the top

    settings = load_settings()
    try:  # a database that is still starting gets a bounded wait
        wait_for(lambda: check_database(settings), attempts=wait_attempts)
    except DependencyUnavailable as exc:
        fail(f"{exc}; gave up after {wait_attempts} attempts")
    ready()
    api = create_app()
    settle_heap()
    uvicorn.run(api, host=host, port=port or settings.runtime.api_port)


@app.command()
def up(
    admin_url: Annotated[
        str, typer.Option(help="PostgreSQL URL allowed to create Flywheel's databases.")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
) -> None:
    """Production mode on this machine: Prefect, MLflow, the API and a Ray head."""
    try:
        stack = Stack.from_settings(load_settings(), admin_url=admin_url)
    except ValueError as exc:  # pydantic's validation error: a setting (a port) is wrong
        fail(f"invalid settings: {exc}")
    try:
        start(stack)
    except StackError as exc:
        fail(str(exc))
    running = ", ".join(name for name, on in status(stack).items() if on)
    console.print(f"running: {running}; environment: {stack.env_file}")
    console.print(f"use it with: set -a; . {stack.env_file}; set +a")


@app.command()
def down() -> None:
    """Stop what `flywheel up` started, by process id."""
    stopped = stop(Stack.from_settings(load_settings()))
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


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
        "rollout",
    ):
        table.add_column(column, overflow="fold")
    rollouts = rollout_outcomes(settings)
    notes = []
    for report in reports:
        fleet_ = report.get("fleet", {})
        cand = report.get("candidate") or {}
        n = cand.get("n") or 0
        worked = bool(fleet_.get("episodes"))
        table.add_row(
            str(report["night"]),
            str(report.get("champion_before") or "-"),
            str(fleet_.get("episodes", 0)) if worked else "lab demos",
            f"{fleet_['autonomous_success']:.0%}" if worked else "-",
            f"{fleet_['interventions_per_episode']:.2f}" if worked else "-",
            str(cand.get("version") or "-"),
            format_rate(cand.get("successes"), n),
            format_rate(cand.get("champion_successes"), n),
            str(cand.get("verdict") or ("shadowing" if cand.get("status") == "shadowing" else "-")),
            rollouts.get(cand.get("id"), "-"),
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
        first_rate = format_rate(judged[0]["successes"], judged[0]["n"])
        now_rate = format_rate(current["successes"], current["n"])
        console.print(
            f"closed-loop success: first policy {first_rate} -> champion v{champion} {now_rate}"
        )


@app.command()
def drill(
    robots: Annotated[int, typer.Option(min=2, help="Simulated robots.")] = 8,
    episodes: Annotated[int, typer.Option(min=1, help="Episodes per robot in the shift.")] = 8,
    as_json: JsonFlag = False,
) -> None:
    """Rollback drill: roll a deliberately worse candidate out to the canary and watch the
    controller roll it back during the next shift (needs a champion: run `nightly` first)."""
    settings = ready()
    from flows.simulation import fleet_shift
    from services.rollout.drill import DRILL_ACTOR, register_worse_candidate
    from services.serving.robots import provision_robots

    with Stages() as stages:
        try:
            with stages.stage("register the worse candidate"):
                candidate_id = register_worse_candidate(settings)
        except RuntimeError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(code=1) from exc
        config = FleetConfig(robots=robots, episodes_per_robot=episodes, tasks=settings.fleet.tasks)
        with session_scope(settings.db_url, write=True) as session:
            provision_robots(
                session=session, robot_ids=robot_ids(config), tasks=settings.fleet.tasks
            )
        with stages.stage("roll-out to the canary"):
            rollout = start_rollout(settings, candidate_id, actor=DRILL_ACTOR)
        with stages.stage("fleet-shift"):
            shift = fleet_shift.fn(
                settings, nights_completed(settings), robots, episodes, lab_demos=0
            )
    with session_scope(settings.db_url) as session:
        [state] = [r for r in rollouts_overview(session)["rollouts"] if r["id"] == rollout.id]
    if as_json:
        return print_json({"rollout": state, "windows": shift.get("rollout_windows", [])})
    console.print(
        f"drill: model {state['to_version']} (champion {state['from_version']} with its output "
        f"layer zeroed) started at the {state['stages'][0]['name']} stage"
    )
    for i, window in enumerate(shift.get("rollout_windows", []), 1):
        if window.get("rollout") != rollout.id or "llr" not in window:
            continue
        llr = ", ".join(f"{k} {v:.2f}" for k, v in window["llr"].items())
        console.print(f"window {i} ({window['stage']}): LLR {llr} -> {window['decision']}")
    console.print(f"rollout {state['state']}: {state['reason']}")


@app.command()
def deploy(
    cron: Annotated[str, typer.Option(help="When the night starts (cron).")] = "0 2 * * *",
    retention_cron: Annotated[
        str, typer.Option(help="When retention runs (cron): FLYWHEEL_RETENTION_* applied.")
    ] = "0 1 * * *",
    timezone: Annotated[str, typer.Option(help="Time zone of the schedule.")] = "UTC",
    watch_interval: Annotated[
        float, typer.Option(min=1, help="Seconds between the rollout controller's windows.")
    ] = 300,
    work_pool: Annotated[str, typer.Option(help="Prefect work pool (created if missing).")] = (
        "flywheel"
    ),
    pool_type: Annotated[str, typer.Option(help="process | kubernetes")] = "process",
) -> None:
    """Register the nightly and retention flows on cron schedules and the rollout watcher on
    an interval as Prefect deployments (needs a Prefect server: PREFECT_API_URL)."""
    ready()
    from flows.deploy import DeployError, deploy_nightly, deploy_retention, deploy_rollout_watcher

    try:
        nightly_id = deploy_nightly(
            cron=cron, timezone=timezone, work_pool=work_pool, pool_type=pool_type
        )
        watcher_id = deploy_rollout_watcher(
            interval_s=watch_interval, work_pool=work_pool, pool_type=pool_type
        )
        retention_id = deploy_retention(
            cron=retention_cron, timezone=timezone, work_pool=work_pool, pool_type=pool_type
        )
    except DeployError as exc:
        fail(str(exc))
    console.print(
        f"deployment nightly-flywheel/nightly ({nightly_id}): '{cron}' {timezone} on work pool "
        f"{work_pool}, one run at a time; start a worker with `prefect worker start --pool "
        f"{work_pool}`"
    )
    console.print(
        f"deployment watch-rollouts/controller ({watcher_id}): every {watch_interval:g} s on "
        f"work pool {work_pool}, one run at a time"
    )
    console.print(
        f"deployment apply-retention/retention ({retention_id}): '{retention_cron}' {timezone} "
        f"on work pool {work_pool}, one run at a time"
    )


@app.command()
def notify(
    follow: Annotated[
        bool,
        typer.Option("--follow", help="Keep delivering, every FLYWHEEL_NOTIFY_POLL_S, until ^C."),
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Deliver the notifications owed to the webhook (FLYWHEEL_NOTIFY_WEBHOOK_URL): approvals
    waiting, gate verdicts, rollbacks, halts, pauses, quarantine spikes. One pass by default."""
    settings = ready()
    if not settings.notify.enabled:
        fail("notifications are off: set FLYWHEEL_NOTIFY_WEBHOOK_URL (see docs/notifications.md)")
    if follow:
        Notifier(settings).run()
        return
    done = deliver_pending(settings)
    owed = notification_counts(settings)
    if json_out:
        print_json({"delivered_now": done.delivered, "failed_attempts": done.failed, **owed})
        return
    console.print(
        f"delivered {done.delivered} now; {owed['pending']} pending, {owed['delivered']} "
        f"delivered in all, {owed['failed']} given up"
    )
