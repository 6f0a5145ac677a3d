"""Commands that run the loop: the simulated fleet, nights, the API server."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from services.cli.base import (
    JsonFlag,
    app,
    console,
    format_rate,
    print_json,
    ready,
)
from services.config import Settings


@app.command()
def sim(
    robots: Annotated[int, typer.Option(min=1)] = 4,
    episodes: Annotated[int, typer.Option(min=1)] = 8,
) -> None:
    """Run the simulated fleet for one shift with its assigned policies."""
    settings = ready()  # before Prefect is imported: it reads its settings once, at import
    from flows.simulation import fleet_shift
    from services.nights import nights_completed

    result = fleet_shift.fn(nights_completed(settings), robots, episodes, lab_demos=10)
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
    settings = ready()  # before Prefect is imported: it reads its settings once, at import
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
        return print_json(reports)
    print_nights(reports, settings)


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """Serve the Flywheel API."""
    import uvicorn

    from services.api.main import create_app

    ready()
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
            format_rate(cand.get("successes"), n),
            format_rate(cand.get("champion_successes"), n),
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
        first_rate = format_rate(judged[0]["successes"], judged[0]["n"])
        now_rate = format_rate(current["successes"], current["n"])
        console.print(
            f"closed-loop success: first policy {first_rate} -> champion v{champion} {now_rate}"
        )
