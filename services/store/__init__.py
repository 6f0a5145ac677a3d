"""SQLAlchemy models, sessions and Alembic migrations of the Flywheel store."""

from services.store.audit import record_audit
from services.store.db import engine_for, migrate, session_scope

__all__ = ["engine_for", "migrate", "record_audit", "session_scope"]
