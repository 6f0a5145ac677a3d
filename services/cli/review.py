"""Commands for reviewing candidates, deciding on them and rolling them out."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer

from services.cli.base import (
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


@app.command()
def evaluate(version: str, as_json: JsonFlag = False) -> None:
    """Paired closed-loop evaluation of a candidate against its champion, and the gate."""
    from services.evaluation.gate import judge, record_verdict
    from services.evaluation.paired import evaluate_candidate

    settings = ready()
    candidate_id = resolve_candidate(settings, version)
    with console.status(f"evaluating model version {version}"):
        evaluations = evaluate_candidate(settings, candidate_id)
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
    from sqlalchemy import select

    from services.store import session_scope
    from services.store.models import Candidate, Decision

    settings = ready()
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
        return print_json(records)
    print_table(
        records,
        ("version", "parent", "status", "gate", "gate_reason", "approval"),
        title="candidates",
    )


def _decide(version: str, reason: str, verdict: str) -> None:
    from services.approval import decisions
    from services.store import session_scope

    settings = ready()
    try:
        with session_scope(settings.db_url) as session:
            user = decisions.get_user(session=session, name=settings.user or getpass.getuser())
            fn = decisions.approve if verdict == "approve" else decisions.reject
            decision = fn(session=session, candidate_id=version, user=user, reason=reason)
            summary = f"{decision.verdict} candidate {decision.candidate_id} as {user.name}"
    except (decisions.PermissionDenied, decisions.DecisionConflict, LookupError, ValueError) as exc:
        fail(str(exc))
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
        with session_scope(ready().db_url) as session:
            add_user(session=session, name=name, role=role)
    except (DecisionConflict, ValueError) as exc:
        fail(str(exc))
    console.print(f"added {name} as {role}")


@rollout_app.command("start")
def rollout_start(version: str) -> None:
    """Roll an approved candidate out to the fleet."""
    from services.rollout.controller import RolloutError, start_rollout

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
    """Rollouts, newest first, and each robot's assignment."""
    from sqlalchemy import select

    from services.rollout.assignments import fleet
    from services.rollout.ledger import champion_of
    from services.store import session_scope
    from services.store.models import Rollout

    with session_scope(ready().db_url) as session:
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
        return print_json({"champion": champion, "rollouts": rollouts, "robots": robots})
    console.print(f"champion: {champion}")
    print_table(rollouts, ("id", "from", "to", "state", "reason"), title="rollouts")
    print_table(robots, ("robot", "version", "last_seen"), title="fleet")


@rollout_app.command("rollback")
def rollout_rollback(reason: Annotated[str, typer.Option(help="Why.")]) -> None:
    """Return the fleet to the champion before the last rollout."""
    from services.rollout.controller import RolloutError, rollback

    settings = ready()
    try:
        rolled = rollback(settings, actor=settings.user or getpass.getuser(), reason=reason)
    except (RolloutError, ValueError) as exc:
        fail(str(exc))
    console.print(f"rolled back {rolled.to_version} -> {rolled.from_version}")
