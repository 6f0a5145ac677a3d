"""Users and API tokens: anyone may see who they are; only an admin manages users."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from services.api.deps import CurrentUser, SessionDep, WriteSessionDep
from services.api.schemas import IssuedToken, NewUser, UserOut
from services.approval import users

router = APIRouter(
    prefix="/users", tags=["users"], responses={400: {"description": "Malformed JSON body."}}
)

_ADMIN_ERRORS = {
    401: {"description": "Missing or invalid token."},
    403: {"description": "Admins only."},
}
UserName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]


@router.get("/me", response_model=UserOut, responses={401: _ADMIN_ERRORS[401]})
def me(user: CurrentUser) -> UserOut:
    return UserOut(name=user.name, role=user.role)


@router.get("", response_model=list[UserOut], responses=_ADMIN_ERRORS)
def list_users(session: SessionDep, user: CurrentUser) -> list[UserOut]:
    users.require_admin(user)
    return [UserOut(name=u.name, role=u.role) for u in users.list_users(session=session)]


@router.post(
    "",
    response_model=IssuedToken,
    status_code=201,
    responses=_ADMIN_ERRORS | {409: {"description": "The user exists."}},
)
def add_user(body: NewUser, session: WriteSessionDep, user: CurrentUser) -> IssuedToken:
    users.require_admin(user)
    token = users.add_user(session=session, name=body.name, role=body.role, actor=user.name)
    return IssuedToken(name=body.name, role=body.role, token=token)


@router.post(
    "/{name}/token",
    response_model=IssuedToken,
    responses=_ADMIN_ERRORS | {404: {"description": "No such user."}},
)
def issue_token(name: UserName, session: WriteSessionDep, user: CurrentUser) -> IssuedToken:
    users.require_admin(user)
    token = users.issue_token(session=session, name=name, actor=user.name)
    target = users.get_user(session=session, name=name)
    return IssuedToken(name=target.name, role=target.role, token=token)
