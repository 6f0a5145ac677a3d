"""FastAPI dependencies as Annotated aliases: settings, sessions, the signed-in user, the
calling robot."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from services.approval.users import Unauthenticated, authenticate
from services.config import Settings, get_settings
from services.serving.credentials import authenticate_robot
from services.store import session_scope
from services.store.models import Robot, User


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
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None:
        raise HTTPException(
            status_code=401,
            detail="missing bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        user = authenticate(session=session, token=credentials.credentials)
    except Unauthenticated as exc:
        raise HTTPException(
            status_code=401, detail=str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    session.expunge(user)
    return user


CurrentUser = Annotated[User, Depends(_current_user)]

_robot_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="RobotCredential",
    description="A robot's credential (fwr_...) from `flywheel robots enroll`.",
)


def _current_robot(
    request: Request,
    session: WriteSessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_robot_bearer)],
) -> Robot:
    # The raw path parameter, not a validated one: the credential is checked before anything
    # else about the request, so a caller without one learns nothing but 401.
    return authenticate_robot(
        session=session,
        robot_id=request.path_params.get("robot_id", ""),
        credential=credentials.credentials if credentials else None,
    )


# The robot named in the path, authenticated by its own credential (401, or 403 for another's).
CurrentRobot = Annotated[Robot, Depends(_current_robot)]

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
