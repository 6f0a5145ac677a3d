"""FastAPI dependencies as Annotated aliases: settings, sessions, the signed-in user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from services.api.lockout import lockout_keys, lockout_of
from services.approval.users import Unauthenticated, authenticate
from services.config import Settings, get_settings
from services.store import session_scope
from services.store.models import User


def _settings() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]


def _session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.db_url) as session:
        yield session


def _write_session(settings: SettingsDep) -> Iterator[Session]:
    # Serialises writers on SQLite, so two decisions on one candidate cannot both pass checks.
    with session_scope(settings.db_url, write=True) as session:
        yield session


SessionDep = Annotated[Session, Depends(_session)]
WriteSessionDep = Annotated[Session, Depends(_write_session)]

_bearer = HTTPBearer(auto_error=False, description="An API token from `flywheel users add`.")


def _current_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise HTTPException(
            status_code=401,
            detail="missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    lockout, keys = lockout_of(request), lockout_keys(request)
    lockout.check(keys)  # a locked-out client's token is not even looked at
    try:
        user = authenticate(session=session, token=credentials.credentials)
    except Unauthenticated as exc:
        lockout.record_failure(keys)
        raise HTTPException(
            status_code=401, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    lockout.record_success(keys)
    session.expunge(user)
    return user


CurrentUser = Annotated[User, Depends(_current_user)]

# A candidate by model version or candidate id; the pattern keeps control characters
# (which PostgreSQL refuses in text) out of queries.
CandidateRef = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Model version or candidate id.",
    ),
]
