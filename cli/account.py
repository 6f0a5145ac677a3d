"""People and their tokens: `flywheel login`, `logout`, `whoami` and `flywheel users`.

The CLI acts as the holder of an API token (``cli/people.py``). `login` checks the token
(with the API in production, with the local store embedded) before it keeps it.
"""

from __future__ import annotations

import sys
from typing import Annotated
from urllib.parse import quote

import typer

from cli.base import (
    JsonFlag,
    app,
    console,
    fail,
    load_settings,
    print_json,
    print_table,
    ready,
    users_app,
)
from cli.credentials import HeldToken, forget_token, store_token
from cli.people import (
    NO_TOKEN,
    Action,
    Refused,
    acting_settings,
    administer,
    identify,
    require_token,
)
from services.approval import users
from services.store import session_scope


@app.command()
def login(
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="Read the token from standard input.")
    ] = False,
) -> None:
    """Keep an API token for this API (FLYWHEEL_API_URL), checked first; the CLI then acts
    as its holder. Tokens come from `flywheel users add` or an admin."""
    settings = acting_settings()
    if token_stdin:
        token = sys.stdin.readline().strip()
    else:
        token = typer.prompt("API token", hide_input=True).strip()
    if not token:
        fail("no token given")
    try:
        user = identify(settings, HeldToken(token, "the token given"))
        path = store_token(settings, token)
    except (Refused, ValueError) as exc:
        fail(str(exc))
    console.print(
        f"logged in to {settings.api_url} as {user['name']} ({user['role']}); token kept in {path}"
    )
    if settings.cli.token is not None:
        console.print("note: FLYWHEEL_TOKEN is set and is used before the stored login")


@app.command()
def logout() -> None:
    """Forget the token stored for this API (FLYWHEEL_API_URL)."""
    settings = load_settings()
    try:
        forgotten = forget_token(settings)
    except ValueError as exc:
        fail(str(exc))
    if forgotten:
        console.print(f"logged out of {settings.api_url}")
    else:
        console.print(f"no stored login for {settings.api_url}")


@app.command()
def whoami(as_json: JsonFlag = False) -> None:
    """The user the CLI acts as: the holder of FLYWHEEL_TOKEN or of the stored login."""
    settings = acting_settings()
    try:
        held = require_token(settings)
        user = identify(settings, held)
    except (Refused, ValueError) as exc:
        fail(str(exc))
    if as_json:
        return print_json({**user, "api_url": settings.api_url, "token_from": held.source})
    console.print(f"{user['name']} ({user['role']}), token from {held.source}")


@users_app.command("add")
def users_add(
    name: str, role: Annotated[str, typer.Option(help="engineer | fleet-manager | admin")]
) -> None:
    """Add a user with a role (admins); prints their API token once.

    With no token, the operator at the machine adds users in embedded mode, and in
    production only the first admin (the installation's bootstrap)."""
    settings = acting_settings()

    def local(user) -> dict:
        with session_scope(settings.db_url, write=True) as session:
            users.require_admin(user)
            return {"token": users.add_user(session=session, name=name, role=role, actor=user.name)}

    def without_token() -> dict:
        with session_scope(ready().db_url, write=True) as session:
            if settings.mode != "production":
                return {"token": users.add_user(session=session, name=name, role=role)}
            if role != "admin":
                raise Refused(
                    f"{NO_TOKEN}; with none, production adds only its first admin "
                    "(`flywheel users add NAME --role admin`), who then adds the others"
                )
            return {"token": users.add_first_admin(session=session, name=name)}

    body = {"name": name, "role": role}
    issued = _administer(settings, Action("POST", "/users", body, local), without_token)
    console.print(f"added {name} as {role}; API token (shown once): {issued['token']}")


@users_app.command("token")
def users_token(name: str) -> None:
    """Issue a new API token for a user (admins); the old one stops working."""
    settings = acting_settings()

    def local(user) -> dict:
        with session_scope(settings.db_url, write=True) as session:
            users.require_admin(user)
            return {"token": users.issue_token(session=session, name=name, actor=user.name)}

    def without_token() -> dict:
        if settings.mode == "production":
            raise Refused(f"{NO_TOKEN}; in production only an admin issues tokens")
        with session_scope(settings.db_url, write=True) as session:
            return {"token": users.issue_token(session=session, name=name)}

    path = f"/users/{quote(name, safe='')}/token"
    issued = _administer(settings, Action("POST", path, None, local), without_token)
    console.print(f"new API token for {name} (shown once): {issued['token']}")


def _administer(settings, action: Action, without_token) -> dict:
    try:
        return administer(settings, action, without_token)
    except Refused as exc:
        fail(str(exc))


@users_app.command("list")
def users_list(as_json: JsonFlag = False) -> None:
    """Users and their roles."""
    with session_scope(ready().db_url) as session:
        records = [{"name": u.name, "role": u.role} for u in users.list_users(session=session)]
    if as_json:
        return print_json(records)
    print_table(records, ("name", "role"), title="users")
