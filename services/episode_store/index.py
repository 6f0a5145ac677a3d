"""The SQL index of the episode store: committing a chunk, ingests that run at once, listing.

Every ingest writing one index, on one machine or several, takes turns to commit a chunk
(``writer_lock``): PostgreSQL's advisory lock where the index is on a server (it spans
hosts), the episode store's file lock where it is SQLite (one host). Decoding and validating
run outside it, in parallel. Inside it a writer first drops the episodes another writer
indexed since it looked (they count as skipped), then numbers its episodes, writes the
chunk's Parquet file and commits its rows. A unique violation all the same (a writer that
took no lock) is treated as losing the race: the transaction rolls back, the data file is
removed, and the chunk is tried again without what the winner indexed.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, insert, or_, select, text
from sqlalchemy.exc import IntegrityError

from services.config import Settings
from services.episode_store.parquet import EpisodeStore
from services.episodes.model import RawEpisode
from services.store import engine_for, record_audit, session_scope
from services.store.models import Episode, EpisodeTombstone, IngestRun, Intervention, utcnow

log = logging.getLogger(__name__)

# pg_advisory_lock's key for "commits to the episode index"; advisory locks are per database.
LOCK_KEY = zlib.crc32(b"flywheel.episode-index")
# A chunk loses a race at most once per rival commit; this many in a row means something else.
COMMIT_ATTEMPTS = 5


@dataclass
class Upload:
    """One log, or one episode of a log, as the index records it: where it came from, its
    content hash, and its episode, or why it is quarantined."""

    uri: str  # the log's URI, with "#<episode>" for one of several episodes in it
    digest: str
    format: str
    episode: RawEpisode | None = None
    reason: str | None = None  # why it is quarantined

    @property
    def episode_id(self) -> str:
        return self.digest[:16]


@contextmanager
def writer_lock(db_url: str, store: EpisodeStore) -> Iterator[None]:
    """Held while one writer repairs the store or commits a chunk to it."""
    if db_url.startswith("sqlite"):
        with store.lock():
            yield
        return
    with engine_for(db_url).connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})


def repair(db_url: str, store: EpisodeStore) -> None:
    """Remove what a crashed writer left: data files no index row refers to, and frames of
    deleted episodes that an interrupted deletion left in a shared file."""
    with writer_lock(db_url, store):
        with session_scope(db_url) as session:
            referenced = set(session.scalars(select(Episode.data_file).distinct()))
            deleted = set(session.scalars(select(EpisodeTombstone.episode_id)))
        for orphan in store.repair(referenced - {None}):
            log.warning("removed %s: no episode refers to it (left by a crash)", orphan)
        for leftover in store.drop_episodes(deleted) if deleted else ():
            log.warning("removed deleted episodes' frames from %s (a deletion cut short)", leftover)


def commit_chunk(
    db_url: str,
    store: EpisodeStore,
    chunk: Sequence[Upload],
    *,
    run_id: str,
    source: str,
    validation: list[dict],
    skipped: int,
    finished: bool,
    tombstoned: int = 0,
) -> tuple[list[Upload], int]:
    """Index ``chunk`` (uploads with ``reason`` set are quarantined); returns the uploads
    indexed and how many another writer had indexed first (skipped)."""
    lost = 0
    for attempt in range(COMMIT_ATTEMPTS):
        with writer_lock(db_url, store):
            taken = _indexed(db_url, chunk)
            kept = [u for u in chunk if not {u.digest, u.episode_id} & taken]
            lost += len(chunk) - len(kept)
            chunk = kept
            try:
                counts = {"skipped": skipped + lost, "tombstoned": tombstoned}
                _commit(db_url, store, chunk, run_id, source, validation, counts, finished)
                return list(chunk), lost
            except IntegrityError as exc:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise
                log.info("another writer indexed part of this chunk first; retrying (%s)", exc.orig)
    raise AssertionError("unreachable")


def _indexed(db_url: str, chunk: Sequence[Upload]) -> set[str]:
    """The digests and ids of ``chunk`` that the index already holds, or that a deletion
    tombstoned since the ingest looked."""
    if not chunk:
        return set()
    digests = [u.digest for u in chunk]
    ids = [u.episode_id for u in chunk]
    with session_scope(db_url) as session:
        rows = session.execute(
            select(Episode.content_hash, Episode.id).where(
                or_(Episode.content_hash.in_(digests), Episode.id.in_(ids))
            )
        ).all()
        deleted = session.scalars(
            select(EpisodeTombstone.content_hash).where(EpisodeTombstone.content_hash.in_(digests))
        ).all()
    return {value for row in rows for value in row} | set(deleted)


def _commit(db_url, store, chunk, run_id, source, validation, counts, finished) -> None:
    good = [u for u in chunk if u.reason is None]
    bad = [u for u in chunk if u.reason is not None]
    data_file = None
    try:
        with session_scope(db_url, write=True) as session:
            first = session.scalar(select(func.coalesce(func.max(Episode.episode_index), -1))) + 1
            if good:
                data_file = store.write_batch(
                    [(u.episode_id, first + i, u.episode) for i, u in enumerate(good)]
                )
            run = session.get(IngestRun, run_id)
            if run is None:
                run = IngestRun(id=run_id, source=source)
                session.add(run)
                session.flush()  # the episodes below refer to it
            rows = [_episode_row(u, run_id, data_file, first + i) for i, u in enumerate(good)]
            rows += [_episode_row(u, run_id) for u in bad]
            if rows:
                session.execute(insert(Episode), rows)
            spans = list(_intervention_rows(good))
            if spans:
                session.execute(insert(Intervention), spans)
            for upload in bad:
                record_audit(
                    session,
                    actor="ingest",
                    action="quarantine",
                    subject_type="episode",
                    subject_id=upload.episode_id,
                    after={"source": upload.uri},
                    reason=upload.reason,
                )
            run.validation = [*(run.validation or []), *validation]
            _count_run(session, run, **counts, finished=finished)
    except BaseException:
        if data_file is not None:
            store.remove(data_file)
        raise
    if data_file is not None:
        store.write_meta()


def _count_run(session, run: IngestRun, *, skipped: int, tombstoned: int, finished: bool) -> None:
    """The run's counts, derived from its rows (a retried run id keeps adding up right)."""
    counts = dict(
        session.execute(
            select(Episode.status, func.count())
            .where(Episode.ingest_run_id == run.id)
            .group_by(Episode.status)
        ).all()
    )
    run.ingested = counts.get("ok", 0)
    run.quarantined = counts.get("quarantined", 0)
    run.skipped = skipped
    run.tombstoned = tombstoned
    if finished:
        run.finished_at = utcnow()


def _episode_row(
    upload: Upload, run_id: str, data_file: str | None = None, episode_index: int | None = None
) -> dict:
    raw = upload.episode
    ok = upload.reason is None
    return {
        "id": upload.episode_id,
        "content_hash": upload.digest,
        "episode_index": episode_index if ok else None,
        # What the header says, even when quarantined: which robot sends bad logs matters.
        "robot_id": raw.robot_id if raw else None,
        "task": raw.task if raw else None,
        "policy_version": raw.policy_version if raw else None,
        "kind": raw.kind if raw else None,
        "started_at": raw.started_at if raw else None,
        "duration_s": raw.duration_s if raw and ok else None,
        "steps": raw.steps if raw else None,
        "outcome": raw.outcome if raw else None,
        "n_interventions": len(raw.interventions) if raw and ok else 0,
        "source_uri": upload.uri,
        "source_format": upload.format,
        "ingest_run_id": run_id,
        "status": "ok" if ok else "quarantined",
        "reason": upload.reason,
        "data_file": data_file if ok else None,
        "ingested_at": utcnow(),
    }


def _intervention_rows(good: Sequence[Upload]) -> Iterator[dict]:
    for upload in good:
        for n, span in enumerate(upload.episode.interventions):
            yield {
                "id": f"{upload.episode_id}-{n}",
                "episode_id": upload.episode_id,
                "start_step": span.start_step,
                "end_step": span.end_step,
                "kind": span.kind,
                "operator_id": span.operator_id,
                "reason": span.reason,
            }


def list_episodes(settings: Settings, status: str | None = None) -> list[Episode]:
    """The indexed episodes in the order they were ingested; only those of ``status`` if given."""
    with session_scope(settings.db_url) as session:
        query = select(Episode).order_by(Episode.ingested_at, Episode.id)
        if status is not None:
            query = query.where(Episode.status == status)
        return list(session.scalars(query))
