"""Users, their roles and their API tokens.

A token is shown once, when it is issued, and only its SHA-256 is stored: tokens are 256
random bits, so a fast hash is enough and a leaked table does not leak credentials.
Issuing a new token replaces the old one.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.store import record_audit
from services.store.models import User
from services.tokens import new_secret, secret_hash

ROLES = ("engineer", "fleet-manager", "admin")
# Users are managed by an admin, or with no token by the operator at the machine: in embedded
# mode (who can write the database file can do anything anyway), and in production only to
# add the first admin (see add_first_admin).
LOCAL_ADMIN = "admin (local CLI)"


class NoSuchUser(LookupError):
    """No user by that name."""


class PermissionDenied(Exception):
    """The user's role does not allow this action."""


class Unauthenticated(Exception):
    """No user goes with these credentials."""


class UserExists(Exception):
    """A user with that name is already there."""


def add_user(*, session: Session, name: str, role: str, actor: str = LOCAL_ADMIN) -> str:
    """Add a user and return their first API token (shown once, stored only as a hash)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or len(name) > 64:
        raise ValueError("a user name needs 1 to 64 characters")
    if session.get(User, name) is not None:
        raise UserExists(f"user {name!r} already exists")
    token = _new_token()
    session.add(User(name=name, role=role, token_hash=secret_hash(token)))
    record_audit(
        session,
        actor=actor,
        action="add-user",
        subject_type="user",
        subject_id=name,
        after={"role": role},
    )
    return token


def add_first_admin(*, session: Session, name: str) -> str:
    """Production's bootstrap: the first admin, added by the operator with the database
    credentials; once there is an admin, users are added through the API with a token."""
    admins = session.scalars(select(User.name).where(User.role == "admin")).all()
    if admins:
        raise PermissionDenied(
            f"{', '.join(admins)} already administer this installation: sign in with an "
            "admin's token (`flywheel login`) to add users"
        )
    return add_user(session=session, name=name, role="admin")


def issue_token(*, session: Session, name: str, actor: str = LOCAL_ADMIN) -> str:
    """Replace a user's API token with a new one and return it."""
    user = get_user(session=session, name=name)
    token = _new_token()
    user.token_hash = secret_hash(token)
    record_audit(
        session,
        actor=actor,
        action="issue-token",
        subject_type="user",
        subject_id=name,
        reason="the previous token no longer works",
    )
    return token


def get_user(*, session: Session, name: str) -> User:
    user = session.get(User, name)
    if user is None:
        raise NoSuchUser(
            f"unknown user {name!r}: an admin adds it with `flywheel users add {name} --role ROLE`"
        )
    return user


def authenticate(*, session: Session, token: str) -> User:
    user = session.scalar(select(User).where(User.token_hash == secret_hash(token)))
    if user is None:
        raise Unauthenticated("invalid or revoked API token")
    return user


def require_role(user: User, *roles: str, action: str) -> None:
    if user.role not in roles:
        allowed = " or ".join(r.replace("-", " ") for r in roles)
        raise PermissionDenied(
            f"{user.name} is {article(user.role)}: only {article(allowed)} may {action}"
        )


def require_admin(user: User) -> None:
    if user.role != "admin":
        raise PermissionDenied(f"{user.name} is {article(user.role)}: only an admin manages users")


def list_users(*, session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)))


def article(noun: str) -> str:
    """The noun with its indefinite article: "an admin", "an engineer", "a fleet manager"."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun.replace('-', ' ')}"


def _new_token() -> str:
    return new_secret("fw_")
