"""The SQL index of the episode store: committing a chunk, ingests that run at once, listing.

Every ingest writing one index, on one machine or several, takes turns to commit a chunk
(``writer_lock``): PostgreSQL's advisory lock where the index is on a server (it spans
hosts), the episode store's file lock where it is SQLite (one host). Decoding and validating
run outside it, in parallel. Inside it a writer first drops the episodes another writer
indexed since it looked (they count as skipped), then numbers its episodes, writes the
chunk's Parquet file and commits its rows. A unique violation all the same (a writer that
took no lock) is treated as losing the race: the transaction rolls back, the data file is
removed, and the chunk is tried again without what the winner indexed.

Duplicates are found under the same lock: a good episode whose frames digest (or, with its
robot, the episode id the robot logged) matches a stored episode, or an earlier one of the
chunk, is indexed as a duplicate of it (status ``duplicate``) and its frames are not written
again; datasets and exports take only ``ok`` episodes. A retry of quarantined uploads
(``retry=True``) replaces the quarantined rows its uploads stand for, and the audit log keeps
the reasons they had.
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
    # The episode's content digest (``batch.episode_digest``), whatever bytes its log had.
    frames_digest: str | None = None
    # The episode id the robot logged, where it names this one episode of its log.
    source_uuid: str | None = None
    # The id of the stored episode (or an earlier one of the chunk) this one repeats.
    duplicate_of: str | None = None

    @property
    def episode_id(self) -> str:
        return self.digest[:16]

    @property
    def status(self) -> str:
        if self.reason is not None:
            return "quarantined"
        return "ok" if self.duplicate_of is None else "duplicate"


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
    retry: bool = False,
) -> tuple[list[Upload], int]:
    """Index ``chunk`` (uploads with ``reason`` set are quarantined, good ones that repeat a
    stored episode become duplicates of it); returns the uploads indexed and how many another
    writer had indexed first (skipped). ``retry``: quarantined rows of these uploads (same
    content hash or source) are replaced, not a reason to skip them."""
    lost = 0
    for attempt in range(COMMIT_ATTEMPTS):
        with writer_lock(db_url, store):
            taken = _indexed(db_url, chunk)
            if retry:  # a quarantined row is replaced, not a reason to skip
                taken -= _quarantined(db_url, chunk)
            kept = [u for u in chunk if not {u.digest, u.episode_id} & taken]
            lost += len(chunk) - len(kept)
            chunk = kept
            _mark_duplicates(db_url, chunk)
            try:
                counts = {"skipped": skipped + lost, "tombstoned": tombstoned}
                _commit(db_url, store, chunk, run_id, source, validation, counts, finished, retry)
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


def _quarantined(db_url: str, chunk: Sequence[Upload]) -> set[str]:
    """The digests and ids of ``chunk`` that the index holds as quarantined."""
    if not chunk:
        return set()
    with session_scope(db_url) as session:
        rows = session.execute(
            select(Episode.content_hash, Episode.id).where(
                Episode.status == "quarantined",
                or_(
                    Episode.content_hash.in_([u.digest for u in chunk]),
                    Episode.id.in_([u.episode_id for u in chunk]),
                ),
            )
        ).all()
    return {value for row in rows for value in row}


def _mark_duplicates(db_url: str, chunk: Sequence[Upload]) -> None:
    """Point each good upload that repeats a stored episode, or an earlier good upload of the
    chunk, at it: by frames digest, or by robot and the episode id the robot logged."""
    good = [u for u in chunk if u.reason is None and u.episode is not None]
    digests = {u.frames_digest for u in good} - {None}
    uuids = {u.source_uuid for u in good} - {None}
    if not digests and not uuids:
        return
    with session_scope(db_url) as session:
        rows = session.execute(
            select(
                Episode.id, Episode.frames_digest, Episode.robot_id, Episode.source_episode_uuid
            ).where(
                Episode.status == "ok",
                or_(
                    Episode.frames_digest.in_(digests),
                    Episode.source_episode_uuid.in_(uuids),
                ),
            )
        ).all()
    by_digest = {row.frames_digest: row.id for row in rows if row.frames_digest}
    by_uuid = {
        (row.robot_id, row.source_episode_uuid): row.id for row in rows if row.source_episode_uuid
    }
    for upload in good:
        upload.duplicate_of = None  # a retried commit decides afresh
        uuid_key = (upload.episode.robot_id, upload.source_uuid)
        original = by_digest.get(upload.frames_digest) or (
            by_uuid.get(uuid_key) if upload.source_uuid else None
        )
        if original is not None:
            upload.duplicate_of = original
            continue
        if upload.frames_digest:
            by_digest[upload.frames_digest] = upload.episode_id
        if upload.source_uuid:
            by_uuid[uuid_key] = upload.episode_id


def _replace_quarantined(session, chunk: Sequence[Upload], run_id: str) -> None:
    """On a retry: remove the quarantined rows that these uploads stand for (the same content
    hash, id or source), each leaving its reason in the audit log beside the new outcome."""
    if not chunk:
        return
    by_key: dict[str, Upload] = {}
    for upload in chunk:
        for key in (upload.digest, upload.episode_id, upload.uri, upload.uri.split("#", 1)[0]):
            by_key.setdefault(key, upload)
    old = session.scalars(
        select(Episode).where(
            Episode.status == "quarantined",
            or_(
                Episode.content_hash.in_(by_key),
                Episode.id.in_(by_key),
                Episode.source_uri.in_(by_key),
            ),
        )
    ).all()
    for row in old:
        upload = by_key.get(row.content_hash) or by_key.get(row.id) or by_key.get(row.source_uri)
        record_audit(
            session,
            actor="ingest",
            action="retry-quarantined",
            subject_type="episode",
            subject_id=row.id,
            before={
                "status": row.status,
                "reason": row.reason,
                "ingest_run_id": row.ingest_run_id,
                "source": row.source_uri,
            },
            after={"status": upload.status, "episode_id": upload.episode_id, "run": run_id},
            reason=row.reason,
        )
        session.delete(row)
    session.flush()  # gone before the new rows (which may reuse an id) go in


def _commit(db_url, store, chunk, run_id, source, validation, counts, finished, retry) -> None:
    good = [u for u in chunk if u.status == "ok"]
    duplicates = [u for u in chunk if u.status == "duplicate"]
    bad = [u for u in chunk if u.status == "quarantined"]
    data_file = None
    try:
        with session_scope(db_url, write=True) as session:
            if retry:
                _replace_quarantined(session, chunk, run_id)
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
            rows += [_episode_row(u, run_id) for u in duplicates + bad]
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
    run.duplicates = counts.get("duplicate", 0)
    run.skipped = skipped
    run.tombstoned = tombstoned
    if finished:
        run.finished_at = utcnow()


def _episode_row(
    upload: Upload, run_id: str, data_file: str | None = None, episode_index: int | None = None
) -> dict:
    raw = upload.episode
    ok = upload.status == "ok"
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
        "status": upload.status,
        "reason": upload.reason,
        "frames_digest": upload.frames_digest,
        "source_episode_uuid": upload.source_uuid,
        "duplicate_of": upload.duplicate_of,
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
