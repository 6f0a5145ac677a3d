"""Engines, sessions and migrations. The same code runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


_ENGINES: dict[str, Engine] = {}
_SESSIONMAKERS: dict[str, sessionmaker[Session]] = {}


def engine_for(url: str) -> Engine:
    """One engine (and pool) per URL for the life of the process."""
    if url not in _ENGINES:
        _ENGINES[url] = _create_engine(url)
    return _ENGINES[url]


def dispose_engines() -> None:
    """Close every pooled connection (before dropping a database, or after a fork)."""
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
    _SESSIONMAKERS.clear()


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # pragma: no cover - driver hook
            cursor = dbapi_connection.cursor()
            # WAL lets the fleet, the API and a nightly run read while one of them writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _sessionmaker(url: str) -> sessionmaker[Session]:
    if url not in _SESSIONMAKERS:
        _SESSIONMAKERS[url] = sessionmaker(engine_for(url), expire_on_commit=False)
    return _SESSIONMAKERS[url]


@contextmanager
def session_scope(url: str, *, write: bool = False) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back if it raises.

    ``write=True`` takes SQLite's write lock before the first read (BEGIN IMMEDIATE), so a
    read-then-write transaction waits its turn instead of failing on a stale snapshot when
    another writer commits in between. PostgreSQL needs nothing: rows lock on update.
    """
    session = _sessionmaker(url)()
    if write and url.startswith("sqlite"):
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the store at ``url`` to the newest schema (idempotent)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")
