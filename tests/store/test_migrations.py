import pytest
from sqlalchemy import inspect, select

from services.store import migrate, record_audit, session_scope
from services.store.db import engine_for
from services.store.models import AuditEvent, Episode

TABLES = {
    "robots",
    "users",
    "ingest_runs",
    "episodes",
    "interventions",
    "datasets",
    "dataset_episodes",
    "candidates",
    "evaluation_episodes",
    "evaluations",
    "decisions",
    "rollouts",
    "nightly_runs",
    "audit_log",
    "champion",
    "promotions",
    "heartbeats",
    "episode_tombstones",
    "notification_deliveries",
    "notification_cursor",
}


def _roundtrip(url: str) -> None:
    migrate(url)
    migrate(url)  # idempotent
    assert set(inspect(engine_for(url)).get_table_names()) >= TABLES
    with session_scope(url) as session:
        session.add(Episode(id="abc", content_hash="abc" * 8, source_uri="x", source_format="mcap"))
        record_audit(
            session,
            actor="tester",
            action="create",
            subject_type="episode",
            subject_id="abc",
            after={"status": "ok"},
        )
    with session_scope(url) as session:
        event = session.scalars(select(AuditEvent)).one()
        assert event.after == {"status": "ok"} and event.at.tzinfo is not None
        assert session.get(Episode, "abc").status == "ok"


def test_store_migrates_and_roundtrips_on_sqlite(settings):
    _roundtrip(settings.db_url)


@pytest.mark.postgres
def test_store_migrates_and_roundtrips_on_postgres(postgres_url):
    _roundtrip(postgres_url)


def test_failed_transaction_leaves_nothing(settings):
    with pytest.raises(RuntimeError), session_scope(settings.db_url) as session:
        session.add(Episode(id="half", content_hash="h" * 64, source_uri="x", source_format="mcap"))
        session.flush()
        raise RuntimeError("crash mid-stage")
    with session_scope(settings.db_url) as session:
        assert session.get(Episode, "half") is None


def test_the_migrations_create_exactly_the_models_schema(settings):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from services.store.models import Base

    with engine_for(settings.db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], "a model changed without a migration (alembic revision --autogenerate)"
