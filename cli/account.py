"""Signing the CLI in and out: `flywheel login`, `logout` and `whoami`.

The CLI acts as the holder of an API token (``cli/people.py``). `login` checks the token
(with the API in production, with the local store embedded) before it keeps it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli.base import JsonFlag, app, console, fail, load_settings, print_json
from cli.credentials import HeldToken, forget_token, store_token
from cli.people import Refused, acting_settings, identify, require_token


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
