"""FastAPI dependencies as Annotated aliases: settings, sessions, the signed-in user, the
calling robot."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from services.api.lockout import lockout_keys, lockout_of
from services.approval.users import Unauthenticated, authenticate
from services.config import Settings, get_settings
from services.serving.credentials import RobotForbidden, RobotUnauthenticated, authenticate_robot
from services.store import session_scope
from services.store.models import Robot, User


async def refuse_unknown_query_parameters(request: Request) -> None:
    """A query parameter the route does not declare is refused (422), not ignored: a typo
    (``?limt=5``) would otherwise answer as if it were not there.

    async (as ``_settings``): it only looks at the request, so it runs on the event loop;
    FastAPI hands every plain ``def`` dependency to a worker thread and back, a wake-up of
    two threads per dependency on every request."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "unknown query parameter; this endpoint takes "
                    + (", ".join(sorted(known)) or "none"),
                    "input": request.query_params[name],
                }
                for name in unknown
            ]
        )


KnownQueryOnly = Depends(refuse_unknown_query_parameters)


def _query_names(dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names, todo = set(), [dependant]
    while todo:
        current = todo.pop()
        names.update(field.alias for field in current.query_params)
        todo.extend(current.dependencies)
    return names


async def _settings() -> Settings:
    return get_settings()  # no I/O once read: see refuse_unknown_query_parameters


SettingsDep = Annotated[Settings, Depends(_settings)]


def _session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.db_url) as session:
        yield session


def _write_session(settings: SettingsDep) -> Iterator[Session]:
    # Serialises writers on SQLite, so two decisions on one candidate cannot both pass checks.
    with session_scope(settings.db_url, write=True) as session:
        yield session


# scope="function": the session commits when the route returns, before the response is sent.
# With the default (after the response), a client could read the API's answer, send its next
# request and find the first one's write not yet committed.
SessionDep = Annotated[Session, Depends(_session, scope="function")]
WriteSessionDep = Annotated[Session, Depends(_write_session, scope="function")]

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

_robot_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="RobotCredential",
    description="A robot's credential (fwr_...) from `flywheel robots enroll`.",
)


@dataclass(frozen=True)
class RobotRequest:
    """The robot named in the path, authenticated by its own credential, and the write
    session its request runs in (committed when the request ends)."""

    robot: Robot
    session: Session


def _robot_request(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_robot_bearer)],
) -> Iterator[RobotRequest]:
    # One dependency for the session and the credential: each plain dependency costs a trip
    # to a worker thread and back, and a robot request is the API's most frequent.
    # The raw path parameter, not a validated one: the credential is checked before anything
    # else about the request, so a caller without one learns nothing but 401.
    robot_id = request.path_params.get("robot_id", "")
    lockout, keys = lockout_of(request), lockout_keys(request, robot=robot_id)
    lockout.check(keys)  # a locked-out client's credential is not even looked at
    # Serialises writers on SQLite, as WriteSessionDep.
    with session_scope(settings.db_url, write=True) as session:
        try:
            robot = authenticate_robot(
                session=session,
                robot_id=robot_id,
                credential=credentials.credentials if credentials else None,
            )
        except (RobotUnauthenticated, RobotForbidden):
            if credentials is not None:  # a request with no credential guessed nothing
                lockout.record_failure(keys)
            raise
        lockout.record_success(keys)
        yield RobotRequest(robot=robot, session=session)


# The calling robot (401, or 403 for another's credential) and its request's write session.
CurrentRobot = Annotated[RobotRequest, Depends(_robot_request, scope="function")]

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
