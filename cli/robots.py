"""`flywheel robots`: enroll robots, rotate and revoke their credentials, list the fleet.

These act as the operator at the machine (the audit log says "admin (local CLI)"), as
`flywheel users` does; over the API the same is open to admins only.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cli.base import JsonFlag, console, fail, print_json, print_table, ready, robots_app
from services.approval.users import LOCAL_ADMIN
from services.errors import NotFound
from services.serving import credentials
from services.store import session_scope


@robots_app.command("enroll")
def robots_enroll(
    robot_id: str,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", help="A task the robot works (repeat); default: FLYWHEEL_TASKS."),
    ] = None,
    group: Annotated[str, typer.Option(help="The robot's group.")] = "default",
) -> None:
    """Enroll a robot (it starts on the champion); prints its credential once."""
    settings = ready()
    try:
        with session_scope(settings.db_url, write=True) as session:
            credential = credentials.enroll_robot(
                session=session,
                robot_id=robot_id,
                tasks=task or list(settings.fleet.tasks),
                group=group,
                actor=LOCAL_ADMIN,
            )
    except (credentials.RobotAlreadyEnrolled, ValueError) as exc:
        fail(str(exc))
    console.print(f"enrolled {robot_id}; robot credential (shown once): {credential}")


@robots_app.command("rotate")
def robots_rotate(robot_id: str) -> None:
    """Issue a new credential for a robot; the old one stops working now."""
    try:
        with session_scope(ready().db_url, write=True) as session:
            credential = credentials.rotate_credential(
                session=session, robot_id=robot_id, actor=LOCAL_ADMIN
            )
    except NotFound as exc:
        fail(str(exc))
    console.print(f"new credential for {robot_id} (shown once): {credential}")


@robots_app.command("revoke")
def robots_revoke(robot_id: str) -> None:
    """Revoke a robot's credential: it is refused until enrolled again."""
    try:
        with session_scope(ready().db_url, write=True) as session:
            credentials.revoke_credential(session=session, robot_id=robot_id, actor=LOCAL_ADMIN)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"revoked {robot_id}'s credential; `flywheel robots enroll` issues a new one")


@robots_app.command("list")
def robots_list(as_json: JsonFlag = False) -> None:
    """Robots, their assignment, whether they hold a credential, and when they were seen."""
    with session_scope(ready().db_url) as session:
        robots = credentials.enrolled_robots(session=session)
    if as_json:
        return print_json(robots)
    records = [
        {
            "robot": r.id,
            "group": r.group,
            "tasks": ", ".join(r.tasks),
            "version": r.policy_version,
            "credential": f"issued {r.credential_issued_at:%Y-%m-%d %H:%M}"
            if r.enrolled
            else "none (revoked or not enrolled)",
            "last seen": r.last_seen and f"{r.last_seen:%Y-%m-%d %H:%M:%S}",
        }
        for r in robots
    ]
    print_table(
        records, ("robot", "group", "tasks", "version", "credential", "last seen"), "robots"
    )
