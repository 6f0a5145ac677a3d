"""`flywheel robots`: enroll robots, rotate and revoke their credentials, list the fleet.

Enroll, rotate and revoke are an admin's: the CLI acts as the holder of its token (over the
API in production, on the store in embedded mode), or, in embedded mode with no token, as
the operator at the machine (the audit log says "admin (local CLI)"), as `flywheel users`
does.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from cli.base import JsonFlag, console, fail, print_json, print_table, ready, robots_app
from cli.people import NO_TOKEN, Action, Refused, acting_settings, administer
from services.approval.users import LOCAL_ADMIN, require_role
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
    """Enroll a robot (it starts on the champion); prints its credential once (admins)."""
    settings = acting_settings()

    def enroll(actor: str) -> dict:
        with session_scope(settings.db_url, write=True) as session:
            credential = credentials.enroll_robot(
                session=session,
                robot_id=robot_id,
                tasks=task or list(settings.fleet.tasks),
                group=group,
                actor=actor,
            )
        return {"credential": credential}

    body = {"robot_id": robot_id, "tasks": task or None, "group": group}
    issued = _administer(settings, "POST", "/robots", body, enroll)
    console.print(f"enrolled {robot_id}; robot credential (shown once): {issued['credential']}")


@robots_app.command("rotate")
def robots_rotate(robot_id: str) -> None:
    """Issue a new credential for a robot; the old one stops working now (admins)."""
    settings = acting_settings()

    def rotate(actor: str) -> dict:
        with session_scope(settings.db_url, write=True) as session:
            return {
                "credential": credentials.rotate_credential(
                    session=session, robot_id=robot_id, actor=actor
                )
            }

    path = f"/robots/{quote(robot_id, safe='')}/credential"
    issued = _administer(settings, "POST", path, None, rotate)
    console.print(f"new credential for {robot_id} (shown once): {issued['credential']}")


@robots_app.command("revoke")
def robots_revoke(robot_id: str) -> None:
    """Revoke a robot's credential: it is refused until enrolled again (admins)."""
    settings = acting_settings()

    def revoke(actor: str) -> dict:
        with session_scope(settings.db_url, write=True) as session:
            credentials.revoke_credential(session=session, robot_id=robot_id, actor=actor)
        return {}

    path = f"/robots/{quote(robot_id, safe='')}/credential"
    _administer(settings, "DELETE", path, None, revoke)
    console.print(f"revoked {robot_id}'s credential; `flywheel robots enroll` issues a new one")


def _administer(settings, method: str, path: str, body: dict | None, local) -> dict:
    """As the token's holder, who must be an admin (over the API in production); with no
    token in embedded mode, as the operator at the machine, as `flywheel users` does."""

    def as_holder(user) -> dict:
        require_role(user, "admin", action="manage robot credentials")
        return local(user.name)

    def without_token() -> dict:
        if settings.mode == "production":
            raise Refused(f"{NO_TOKEN}; in production only an admin manages robot credentials")
        return local(LOCAL_ADMIN)

    try:
        return administer(settings, Action(method, path, body, as_holder), without_token)
    except (Refused, credentials.RobotAlreadyEnrolled) as exc:
        fail(str(exc))


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
