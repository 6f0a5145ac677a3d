"""Shadow runs and the field gate: `flywheel shadow ...` and `flywheel field-gate ...`."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.base import JsonFlag, app, console, fail, print_json, print_table, ready
from cli.people import Action, act, acting_settings
from services.approval.decisions import find_candidate
from services.errors import NotFound
from services.shadow import manage
from services.shadow.judging import candidate_shadow, field_agreement
from services.store import session_scope

shadow_app = typer.Typer(no_args_is_help=True, help="Run a candidate beside the champion.")
field_gate_app = typer.Typer(no_args_is_help=True, help="Thresholds for field evidence.")
app.add_typer(shadow_app, name="shadow")
app.add_typer(field_gate_app, name="field-gate")

Reason = Annotated[str, typer.Option(help="Why: kept in the audit log.")]


def _local(settings, do, **arguments):
    def local(user) -> dict:
        with session_scope(settings.db_url, write=True) as session:
            return do(session=session, user=user, **arguments)

    return local


@shadow_app.command("start")
def shadow_start(version: str, reason: Reason) -> None:
    """Run a candidate as the fleet's shadow (fleet managers): the policy server gives it
    every observation, off the executed path, and logs its actions."""
    settings = acting_settings()
    local = _local(settings, manage.start_as, ref=version, reason=reason)
    run = act(settings, Action("POST", "/shadow", {"candidate": version, "reason": reason}, local))
    console.print(
        f"shadow run {run['id']}: model {run['version']} beside {run['champion_version']}"
    )


@shadow_app.command("stop")
def shadow_stop(reason: Reason) -> None:
    """End the shadow run under way (fleet managers)."""
    settings = acting_settings()
    local = _local(settings, manage.stop_as, reason=reason)
    run = act(settings, Action("POST", "/shadow/stop", {"reason": reason}, local))
    console.print(f"shadow run {run['id']} of model {run['version']} ended")


@shadow_app.command("report")
def shadow_report(version: str, as_json: JsonFlag = False) -> None:
    """What the candidate would have done on the fleet's episodes, per task."""
    settings = ready()
    with session_scope(settings.db_url) as session:
        try:
            candidate_id = find_candidate(session, version).id
        except NotFound as exc:
            fail(str(exc))
    report = candidate_shadow(settings, candidate_id)
    if report is None:
        fail(f"candidate {version} has never run as a shadow: flywheel shadow start {version}")
    if as_json:
        return print_json(report)
    console.print(
        f"model {report['version']} beside {report['champion_version']}: shadow run "
        f"{report['shadow_run']} ({report['state']}), {report['logged_steps']} steps logged, "
        f"counts {report['counts']}"
    )
    rows = [
        {
            "task": task,
            "episodes": t["episodes"],
            "operator steps": t["operator_steps"],
            "candidate to operator": _shown(t["candidate_operator_distance"], "{:.3f}"),
            "champion to operator": _shown(t["champion_operator_distance"], "{:.3f}"),
            "difference": _shown(t["distance_difference"], "{:+.3f}"),
            "differs before takeover": _shown(t["differs_before_takeover"], "{:.0%}"),
            "agrees on successes": _shown(t["agreement_on_successes"], "{:.0%}"),
        }
        for task, t in report["tasks"].items()
    ]
    if not rows:
        console.print("no shadow episodes ingested yet")
        return
    print_table(rows, rows[0].keys(), title="shadow report (95% bootstrap intervals)")


def _shown(value: dict | None, form: str) -> str:
    if value is None:
        return "-"
    low, high = value["ci"]
    return f"{form.format(value['value'])} [{form.format(low)}, {form.format(high)}]"


@field_gate_app.command("set")
def field_gate_set(
    reason: Reason,
    min_episodes: Annotated[int, typer.Option(help="Shadow episodes per task, at least.")] = 20,
    max_distance_difference: Annotated[
        float,
        typer.Option(help="Candidate's distance to the operator minus the champion's, at most."),
    ] = 0.0,
    min_agreement: Annotated[
        float, typer.Option(help="Share of the champion's success steps agreed on, at least.")
    ] = 0.5,
    min_successes: Annotated[
        int, typer.Option(help="Autonomous successes to judge agreement on, at least.")
    ] = 5,
    alpha: Annotated[float, typer.Option(help="Significance of each one-sided bound.")] = 0.05,
) -> None:
    """Set the thresholds candidates are judged on where a task has no twin (fleet managers):
    a new version, used by nights that begin after it."""
    values = {
        "min_episodes": min_episodes,
        "max_distance_difference": max_distance_difference,
        "min_agreement": min_agreement,
        "min_successes": min_successes,
        "alpha": alpha,
    }
    settings = acting_settings()
    local = _local(settings, manage.set_thresholds_as, values=values, reason=reason)
    row = act(
        settings, Action("PUT", "/field-gate/thresholds", {**values, "reason": reason}, local)
    )
    console.print(f"field-gate thresholds version {row['version']} set by {row['set_by']}")


@field_gate_app.command("show")
def field_gate_show(as_json: JsonFlag = False) -> None:
    """The thresholds in force and their earlier versions."""
    with session_scope(ready().db_url) as session:
        overview = manage.thresholds_overview(session=session)
    if as_json:
        return print_json(overview)
    if overview["current"] is None:
        console.print("no thresholds set: field evidence is always inconclusive")
        return
    rows = [
        {
            "version": v["version"],
            "set by": v["set_by"],
            "at": v["set_at"],
            **v["thresholds"],
            "reason": v["reason"],
        }
        for v in overview["versions"]
    ]
    print_table(rows, rows[0].keys(), title="field-gate thresholds (newest in force)")


@field_gate_app.command("agreement")
def field_gate_agreement(as_json: JsonFlag = False) -> None:
    """Can field evidence be trusted? On tasks with a twin, the field verdict each shadowed
    candidate would have had, against its closed-loop verdict."""
    found = field_agreement(ready())
    if as_json:
        return print_json(found)
    if not found["n"]:
        console.print("no candidate with both kinds of evidence on a task yet")
        return
    rows = [
        {
            "candidate": c["candidate_id"],
            "task": c["task"],
            "closed loop": f"{c['closed_loop']} ({c['candidate']}/{c['n']} vs {c['champion']})",
            "field": c["field"],
        }
        for c in found["checks"]
    ]
    print_table(rows, rows[0].keys(), title="field verdict against closed loop, twin tasks")
    console.print(
        f"agree {found['agree']} of {found['n']}; field passes {found['field_pass']}, of which "
        f"{found['false_pass_closed_loop_fail']} failed in closed loop and "
        f"{found['false_pass_not_better']} were not better there"
    )
