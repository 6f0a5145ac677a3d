"""A person's action from the CLI, done as the holder of a token and never as a name.

Production sends the action to the API over HTTP with the token: the API checks the token
and the role, as it does for the web app and every other client. Embedded mode (one
machine, no server needed) does the same on the database, as the user the token belongs to
(``authenticate``), with the same service functions and role checks. With no token there is
nobody to act as, and the action is refused. FLYWHEEL_USER, which once named the actor, is
refused rather than ignored, so a script that still sets it learns why its name is not used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from cli.base import fail, load_settings, ready
from cli.credentials import HeldToken, held_token
from services.approval.decisions import DecisionConflict
from services.approval.users import (
    LOCAL_ADMIN,
    NoSuchUser,
    PermissionDenied,
    Unauthenticated,
    UserExists,
    article,
    authenticate,
)
from services.config import Settings
from services.errors import NotFound
from services.registry.ledger import PromotionConflict
from services.rollout.controller import RolloutError
from services.shadow.runs import ShadowError
from services.store import session_scope
from services.store.models import User

NO_TOKEN = (
    "no API token: log in with `flywheel login` (or set FLYWHEEL_TOKEN); "
    "the CLI acts as the holder of a token"
)
# What the service functions raise for a refusal (the API answers each with a 4xx).
REFUSALS = (
    Unauthenticated,
    PermissionDenied,
    NotFound,
    NoSuchUser,
    UserExists,
    DecisionConflict,
    RolloutError,
    PromotionConflict,
    ShadowError,
    ValueError,
    LookupError,
)


class Refused(Exception):
    """The action was not done; the message says why and what to do."""


@dataclass(frozen=True)
class Action:
    """One thing done in a person's name, both ways: the API request production sends, and
    ``local(user)``, which embedded mode runs and which answers what the API would."""

    method: str
    path: str
    body: dict[str, Any] | None
    local: Callable[[User], dict[str, Any]]


def acting_settings() -> Settings:
    """Production needs only the API; embedded mode the migrated local store."""
    settings = load_settings()
    return settings if settings.mode == "production" else ready()


def refuse_named_user(settings: Settings) -> None:
    if settings.cli.user is not None:
        raise Refused(
            "FLYWHEEL_USER is no longer honoured (anyone could name anyone): unset it; the CLI "
            "acts as the holder of a token (`flywheel login` or FLYWHEEL_TOKEN)"
        )


def require_token(settings: Settings) -> HeldToken:
    refuse_named_user(settings)
    try:
        held = held_token(settings)
    except ValueError as exc:  # an unreadable credentials file
        raise Refused(str(exc)) from exc
    if held is None:
        raise Refused(NO_TOKEN)
    return held


def perform(settings: Settings, action: Action, held: HeldToken | None = None) -> dict[str, Any]:
    """Do ``action`` as the holder of ``held`` (default: the token the CLI holds)."""
    held = held or require_token(settings)
    if settings.mode == "production":
        return request(settings, held, action.method, action.path, action.body)
    user = token_holder(settings, held)
    try:
        return action.local(user)
    except REFUSALS as exc:
        raise Refused(str(exc)) from exc


def act(settings: Settings, action: Action) -> dict[str, Any]:
    """``perform`` as the CLI's token holder; a refusal ends the command with its reason."""
    try:
        return perform(settings, action)
    except Refused as exc:
        fail(str(exc))


def identify(settings: Settings, held: HeldToken) -> dict[str, str]:
    """Who holds ``held``: ``{"name", "role"}``, asked of the API in production."""
    if settings.mode == "production":
        return request(settings, held, "GET", "/users/me")
    user = token_holder(settings, held)
    return {"name": user.name, "role": user.role}


def administer(
    settings: Settings, action: Action, without_token: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """An admin's action as the token's holder (who must be an admin); with no token, as the
    operator at the machine (LOCAL_ADMIN in the audit log): ``without_token``, which decides
    what production allows without one."""
    refuse_named_user(settings)
    try:
        held = held_token(settings)
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    try:
        return perform(settings, action, held) if held else without_token()
    except REFUSALS as exc:
        raise Refused(str(exc)) from exc


def admin_actor(settings: Settings, action: str) -> str:
    """The name an admin's action on the local store is recorded under: the token's holder,
    who must be an admin (asked of the API in production), or, in embedded mode with no
    token, the operator at the machine (``LOCAL_ADMIN``), as for user administration.

    For actions that must run beside the store's files (deleting episodes rewrites them), so
    the API checks the person and the CLI does the work."""
    refuse_named_user(settings)
    try:
        held = held_token(settings)
    except ValueError as exc:
        raise Refused(str(exc)) from exc
    if held is None:
        if settings.mode == "production":
            raise Refused(f"{NO_TOKEN}; in production only an admin may {action}")
        return LOCAL_ADMIN
    user = identify(settings, held)
    if user["role"] != "admin":
        raise Refused(f"{user['name']} is {article(user['role'])}: only an admin may {action}")
    return user["name"]


def token_holder(settings: Settings, held: HeldToken) -> User:
    """Embedded mode: the user the token belongs to, detached from its session."""
    with session_scope(settings.db_url) as session:
        try:
            user = authenticate(session=session, token=held.value)
        except Unauthenticated as exc:
            raise Refused(f"{exc} (from {held.source})") from exc
        session.expunge(user)
    return user


def request(
    settings: Settings,
    held: HeldToken,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One API call with the token; a refusal raises Refused with the API's reason."""
    try:
        with httpx.Client(base_url=settings.api_url, timeout=30) as client:
            answer = client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {held.value}"}
            )
    except httpx.HTTPError as exc:
        raise Refused(
            f"cannot reach the Flywheel API at {settings.api_url} (FLYWHEEL_API_URL): {exc}"
        ) from exc
    if answer.is_success:
        return answer.json() if answer.content else {}
    reason = _reason(answer)
    if answer.status_code == 401:
        reason = f"{reason} (from {held.source})"
    raise Refused(reason)


def _reason(answer: httpx.Response) -> str:
    try:
        detail = answer.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return f"the API answered {answer.status_code}: {answer.text[:200]}"
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(f"{'.'.join(map(str, d['loc'][1:]))}: {d['msg']}" for d in detail)
    return str(detail)
