"""Commands for reviewing candidates, deciding on them and rolling them out."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from cli.base import (
    JsonFlag,
    app,
    console,
    fail,
    print_json,
    print_table,
    ready,
    resolve_candidate,
    rollout_app,
)
from cli.people import Action, act, acting_settings
from cli.progress import Stages
from services.approval import decisions, users
from services.evaluation.gate import judge_candidate, record_verdict
from services.evaluation.paired import evaluate_against_champion
from services.readmodel.review import (
    NotFound,
    audit_log,
    candidate_detail,
    candidate_summaries,
)
from services.readmodel.rollouts import rollouts_overview
from services.rollout.controller import (
    halt_rollout,
    rollback,
    start_rollout,
    step_rollout,
)
from services.rollout.health import serve_health
from services.rollout.manager import advance_rollout, resume_rollout
from services.store import session_scope


@app.command()
def evaluate(version: str, as_json: JsonFlag = False) -> None:
    """Paired closed-loop evaluation of a candidate against its champion, and the gate."""
    settings = ready()
    candidate_id = resolve_candidate(settings, version)
    with Stages() as stages, stages.stage(f"evaluate-candidate model version {version}"):
        evaluations = evaluate_against_champion(settings, candidate_id)
    verdict = record_verdict(
        settings.db_url, candidate_id, judge_candidate(settings.db_url, candidate_id, evaluations)
    )
    if as_json:
        return print_json({"evaluations": evaluations, "gate": verdict})
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
    print_table(records, records[0].keys(), title=f"model version {version}")
    console.print(f"gate: [bold]{verdict.verdict}[/bold] ({verdict.reason})")


@app.command()
def candidates(as_json: JsonFlag = False) -> None:
    """Candidates with their gate verdicts and approvals."""
    with session_scope(ready().db_url) as session:
        records = candidate_summaries(session)
    if as_json:
        return print_json(records)
    print_table(
        records,
        ("model_version", "parent_version", "status", "gate", "gate_reason", "approved_by"),
        title="candidates",
    )


@app.command()
def candidate(version: str, as_json: JsonFlag = False) -> None:
    """One candidate: per-task success against the champion, the gate's numbers, lineage,
    decisions and failing evaluation episodes."""
    try:
        with session_scope(ready().db_url) as session:
            detail = candidate_detail(session, version)
    except NotFound as exc:
        fail(str(exc))
    if as_json:
        return print_json(detail)
    console.print(
        f"model version {detail['model_version']} (candidate {detail['id']}), "
        f"parent {detail['parent_version']}, {detail['status']}"
    )
    tasks = [
        {
            "task": t["task"],
            "candidate": _rate(t["candidate"]),
            "champion": _rate(t["champion"]),
            "difference": "-" if t["difference"] is None else f"{t['difference']:+.0%}",
            "lower bound": "-"
            if t["difference_lower_bound"] is None
            else f"{t['difference_lower_bound']:+.0%}",
            "cand only": t["candidate_only"],
            "champ only": t["champion_only"],
        }
        for t in detail["tasks"]
    ]
    if tasks:
        print_table(tasks, tasks[0].keys(), title=f"against champion {detail['champion_version']}")
    if detail["offline"]:
        offline = [{"task": task, **m} for task, m in detail["offline"].items()]
        print_table(offline, offline[0].keys(), title="offline, held-out episodes")
    if detail["gate"]:
        console.print(
            f"gate: [bold]{detail['gate']['verdict']}[/bold] ({detail['gate']['reason']})"
        )
    for d in detail["decisions"]:
        console.print(f"{d['at']:%Y-%m-%d %H:%M} {d['actor']} {d['verdict']}: {d['reason']}")
    failing = detail["failing_episodes"]
    if failing:
        print_table(failing, ("task", "seed", "steps", "champion_succeeded"), title="failing")


def _rate(rate: dict | None) -> str:
    if rate is None:
        return "-"
    low, high = rate["ci"]
    return f"{rate['successes']}/{rate['n']} {rate['rate']:.0%} [{low:.0%}, {high:.0%}]"


@app.command()
def comment(version: str, text: Annotated[str, typer.Option(help="The comment.")]) -> None:
    """Comment on a candidate (any role), as the holder of your token."""
    settings = acting_settings()
    body = {"text": text}
    done = act(
        settings,
        Action(
            "POST",
            f"/candidates/{quote(version, safe='')}/comments",
            body,
            _decision(settings, decisions.comment, candidate_id=version, **body),
        ),
    )
    console.print(f"commented on {version} as {done['actor']}")


@app.command()
def audit(
    subject: Annotated[str | None, typer.Option(help="Only rows about this id.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """The audit log, newest first: who did what, when, why."""
    with session_scope(ready().db_url) as session:
        rows = audit_log(session, subject_id=subject, limit=limit)
    if as_json:
        return print_json(rows)
    print_table(
        rows, ("at", "actor", "action", "subject_type", "subject_id", "reason"), title="audit log"
    )


def _decision(settings, decide, **arguments):
    """Embedded mode's side of a decision or comment: the service function, as ``user``."""

    def local(user) -> dict:
        with session_scope(settings.db_url, write=True) as session:
            decision = decide(session=session, user=user, **arguments)
            return {"verdict": decision.verdict, "actor": decision.actor}

    return local


def _decide(version: str, reason: str, verdict: str) -> None:
    settings = acting_settings()
    decide = decisions.approve if verdict == "approve" else decisions.reject
    path = f"/candidates/{quote(version, safe='')}/{verdict}"
    local = _decision(settings, decide, candidate_id=version, reason=reason)
    done = act(settings, Action("POST", path, {"reason": reason}, local))
    console.print(f"{done['verdict']} candidate {version} as {done['actor']}")


@app.command()
def approve(version: str, reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Approve a candidate for rollout (fleet managers only)."""
    _decide(version, reason, "approve")


@app.command()
def reject(version: str, reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Reject a candidate (fleet managers only)."""
    _decide(version, reason, "reject")


@rollout_app.command("start")
def rollout_start(version: str) -> None:
    """Roll an approved candidate out to the fleet (fleet managers)."""
    settings = acting_settings()

    def local(user) -> dict:
        users.require_role(user, "fleet-manager", action="start a rollout")
        return _rollout(
            start_rollout(settings, resolve_candidate(settings, version), actor=user.name)
        )

    rollout = act(settings, Action("POST", "/rollouts", {"candidate": version}, local))
    console.print(
        f"rollout {rollout['id']}: {rollout['from_version']} -> {rollout['to_version']}, "
        f"{rollout['state']}"
    )


@rollout_app.command("status")
def rollout_status(as_json: JsonFlag = False) -> None:
    """The champion, recent rollouts with their stages, and each robot's assignment."""
    with session_scope(ready().db_url) as session:
        overview = rollouts_overview(session)
    if as_json:
        return print_json(overview)
    console.print(f"champion: {overview['champion']}")
    rows = [
        {
            **r,
            "stages": " -> ".join(_stage_text(s) for s in r["stages"]),
        }
        for r in overview["rollouts"]
    ]
    print_table(
        rows, ("id", "from_version", "to_version", "state", "stages", "reason"), title="rollouts"
    )
    print_table(overview["robots"], ("robot_id", "model_version", "last_seen"), title="fleet")


def _stage_text(stage: dict) -> str:
    text = f"{stage['name']} ({len(stage['robots'])} robots)"
    if stage["counts"] and stage["counts"]["mismatched"]:
        text += f" [count mismatch: {', '.join(stage['counts']['mismatched'])}]"
    return text if stage["outcome"] is None else f"{text}: {stage['outcome']}"


@rollout_app.command("step")
def rollout_step() -> None:
    """Let the controller look at the heartbeats once now (one decision window)."""
    window = step_rollout(ready())
    print_json(window if window is not None else {"decision": "no rollout in progress"})


@rollout_app.command("watch")
def rollout_watch(
    interval: Annotated[float, typer.Option(min=1, help="Seconds between windows.")] = 300,
    health_port: Annotated[
        int | None, typer.Option(help="Serve GET /health on this port (for probes).")
    ] = None,
) -> None:
    """Run the rollout controller: serve the watch-rollouts flow, one decision window every
    INTERVAL seconds (needs a Prefect server: PREFECT_API_URL)."""
    ready()
    # Imported after ready(): Prefect reads its settings (PREFECT_HOME...) once, at import.
    from flows.deploy import DeployError, require_prefect_server, serve_rollout_watcher

    try:
        require_prefect_server()
    except DeployError as exc:
        fail(str(exc))
    if health_port is not None:
        serve_health(health_port)
    console.print(f"rollout controller: a decision window every {interval:g} s")
    serve_rollout_watcher(interval_s=interval)


@rollout_app.command("halt")
def rollout_halt(reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Halt the rollout in progress and return its robots to the champion (fleet managers)."""
    settings = acting_settings()

    def local(user) -> dict:
        users.require_role(user, "fleet-manager", action="halt a rollout")
        return _rollout(halt_rollout(settings, actor=user.name, reason=reason))

    rollout = act(settings, Action("POST", "/rollouts/halt", {"reason": reason}, local))
    console.print(
        f"halted rollout {rollout['id']} of {rollout['to_version']}; "
        f"fleet on {rollout['from_version']}"
    )


@rollout_app.command("resume")
def rollout_resume(
    reason: Annotated[str, typer.Option(help="Why.")],
    episodes: Annotated[
        int | None, typer.Option(min=1, help="More candidate episodes (default: the cap again).")
    ] = None,
    hours: Annotated[
        float | None, typer.Option(min=0.01, help="More hours (default: the cap again).")
    ] = None,
) -> None:
    """Let a paused rollout's stage go on with its caps extended (fleet managers)."""
    settings = acting_settings()

    def local(user) -> dict:
        users.require_role(user, "fleet-manager", action="resume a rollout")
        rollout = resume_rollout(
            settings, actor=user.name, reason=reason, episodes=episodes, hours=hours
        )
        return _rollout(rollout)

    body = {"reason": reason, "episodes": episodes, "hours": hours}
    rollout = act(settings, Action("POST", "/rollouts/resume", body, local))
    console.print(f"resumed rollout {rollout['id']} of {rollout['to_version']}")


@rollout_app.command("advance")
def rollout_advance(reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Move a paused rollout to its next stage by hand (fleet managers)."""
    settings = acting_settings()

    def local(user) -> dict:
        users.require_role(user, "fleet-manager", action="advance a rollout")
        rollout = advance_rollout(settings, actor=user.name, reason=reason)
        stage = rollout.stages[rollout.current_stage]["name"]
        return {**_rollout(rollout), "current_stage": stage}

    rollout = act(settings, Action("POST", "/rollouts/advance", {"reason": reason}, local))
    console.print(
        f"rollout {rollout['id']} of {rollout['to_version']}: {rollout['current_stage']} stage, "
        f"{rollout['state']}"
    )


@rollout_app.command("rollback")
def rollout_rollback(reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Return the fleet to the champion before the last completed rollout (fleet managers)."""
    settings = acting_settings()

    def local(user) -> dict:
        users.require_role(user, "fleet-manager", action="roll back")
        return _rollout(rollback(settings, actor=user.name, reason=reason))

    rolled = act(settings, Action("POST", "/rollouts/rollback", {"reason": reason}, local))
    console.print(f"rolled back {rolled['to_version']} -> {rolled['from_version']}")


def _rollout(rollout) -> dict:
    """The fields of the API's answer that the CLI prints."""
    keys = ("id", "from_version", "to_version", "state")
    return {key: getattr(rollout, key) for key in keys}
