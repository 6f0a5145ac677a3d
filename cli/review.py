"""Commands for reviewing candidates, deciding on them and rolling them out."""

from __future__ import annotations

import getpass
from typing import Annotated

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
    users_app,
)
from cli.progress import Stages
from services.approval import decisions, users
from services.approval.users import NoSuchUser, UserExists, add_user, issue_token, list_users
from services.evaluation.gate import judge, record_verdict
from services.evaluation.paired import evaluate_against_champion
from services.readmodel.review import (
    NotFound,
    audit_log,
    candidate_detail,
    candidate_summaries,
)
from services.readmodel.rollouts import rollouts_overview
from services.rollout.controller import (
    RolloutError,
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
    verdict = record_verdict(settings.db_url, candidate_id, judge(evaluations))
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
    """Comment on a candidate (any role)."""
    _as_user(
        lambda session, user: decisions.comment(
            session=session, candidate_id=version, user=user, text=text
        )
    )
    console.print(f"commented on {version}")


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


def _as_user(action):
    """Run ``action(session, user)`` as the CLI's user (FLYWHEEL_USER or the login name)."""
    settings = ready()
    try:
        with session_scope(settings.db_url, write=True) as session:
            user = users.get_user(session=session, name=settings.user or getpass.getuser())
            return action(session, user)
    except (users.PermissionDenied, decisions.DecisionConflict, LookupError, ValueError) as exc:
        fail(str(exc))


def _decide(version: str, reason: str, verdict: str) -> None:

    fn = decisions.approve if verdict == "approve" else decisions.reject

    def decide(session, user):
        decision = fn(session=session, candidate_id=version, user=user, reason=reason)
        return f"{decision.verdict} candidate {decision.candidate_id} as {user.name}"

    console.print(_as_user(decide))


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
    """Add a user with a role; prints their API token once."""
    try:
        with session_scope(ready().db_url, write=True) as session:
            token = add_user(session=session, name=name, role=role)
    except (UserExists, ValueError) as exc:
        fail(str(exc))
    console.print(f"added {name} as {role}; API token (shown once): {token}")


@users_app.command("token")
def users_token(name: str) -> None:
    """Issue a new API token for a user; the old one stops working."""
    try:
        with session_scope(ready().db_url, write=True) as session:
            token = issue_token(session=session, name=name)
    except NoSuchUser as exc:
        fail(str(exc))
    console.print(f"new API token for {name} (shown once): {token}")


@users_app.command("list")
def users_list(as_json: JsonFlag = False) -> None:
    """Users and their roles."""
    with session_scope(ready().db_url) as session:
        records = [{"name": u.name, "role": u.role} for u in list_users(session=session)]
    if as_json:
        return print_json(records)
    print_table(records, ("name", "role"), title="users")


@rollout_app.command("start")
def rollout_start(version: str) -> None:
    """Roll an approved candidate out to the fleet."""
    settings = ready()
    try:
        rollout = start_rollout(
            settings, resolve_candidate(settings, version), actor=settings.user or getpass.getuser()
        )
    except (RolloutError, LookupError) as exc:
        fail(str(exc))
    console.print(
        f"rollout {rollout.id}: {rollout.from_version} -> {rollout.to_version}, {rollout.state}"
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
    settings = ready()
    user = _fleet_manager(settings, "halt a rollout")
    try:
        rollout = halt_rollout(settings, actor=user, reason=reason)
    except (RolloutError, ValueError) as exc:
        fail(str(exc))
    console.print(
        f"halted rollout {rollout.id} of {rollout.to_version}; fleet on {rollout.from_version}"
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
    settings = ready()
    user = _fleet_manager(settings, "resume a rollout")
    try:
        rollout = resume_rollout(
            settings, actor=user, reason=reason, episodes=episodes, hours=hours
        )
    except (RolloutError, ValueError) as exc:
        fail(str(exc))
    console.print(f"resumed rollout {rollout.id} of {rollout.to_version}")


@rollout_app.command("advance")
def rollout_advance(reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Move a paused rollout to its next stage by hand (fleet managers)."""
    settings = ready()
    user = _fleet_manager(settings, "advance a rollout")
    try:
        rollout = advance_rollout(settings, actor=user, reason=reason)
    except (RolloutError, ValueError) as exc:
        fail(str(exc))
    stage = rollout.stages[rollout.current_stage]["name"]
    console.print(f"rollout {rollout.id} of {rollout.to_version}: {stage} stage, {rollout.state}")


@rollout_app.command("rollback")
def rollout_rollback(reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Return the fleet to the champion before the last completed rollout (fleet managers)."""
    settings = ready()
    user = _fleet_manager(settings, "roll back")
    try:
        rolled = rollback(settings, actor=user, reason=reason)
    except (RolloutError, ValueError) as exc:
        fail(str(exc))
    console.print(f"rolled back {rolled.to_version} -> {rolled.from_version}")


def _fleet_manager(settings, action: str) -> str:
    try:
        with session_scope(settings.db_url) as session:
            user = users.get_user(session=session, name=settings.user or getpass.getuser())
            users.require_role(user, "fleet-manager", action=action)
            return user.name
    except (users.PermissionDenied, LookupError) as exc:
        fail(str(exc))
