"""The ingest stage: new uploads in the fleet log store become validated, indexed episodes.

Idempotent by content: an episode's id is the hash of its file, and a file whose hash the
index already holds (ingested or quarantined) is skipped, so a bad file is quarantined once
and retried only when its bytes change. For each chunk of files the Parquet data file is
written first and the index rows after it in one transaction; if that transaction fails the
data file is deleted, and a crash in between leaves a data file no row refers to, which the
next run removes. Source files are only ever read.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from pyarrow import fs as pafs
from sqlalchemy import func, select

from services.config import Settings
from services.fleetlogs.episode_store import EpisodeStore
from services.fleetlogs.mcap_reader import LogFormatError, RawEpisode, read_episode_mcap
from services.store import record_audit, session_scope
from services.store.models import Episode, IngestRun, Intervention, utcnow
from services.validation.suite import frame_table, validate_frames

log = logging.getLogger(__name__)

# Files per Parquet data file: bounds memory whatever the size of the backlog.
CHUNK_FILES = 200
HASH_BLOCK = 1 << 20
SOURCE_FORMAT = "mcap"


@dataclass
class IngestSummary:
    run_id: str
    ingested: int = 0
    skipped: int = 0
    quarantined: int = 0
    episode_ids: list[str] = field(default_factory=list)
    # (source uri, reason) of every file quarantined by this run.
    quarantined_files: list[tuple[str, str]] = field(default_factory=list)
    # The validation suite's result summary per chunk.
    validation: list[dict] = field(default_factory=list)


@dataclass
class _Upload:
    uri: str
    digest: str
    episode: RawEpisode | None = None
    reason: str | None = None  # why it is quarantined

    @property
    def episode_id(self) -> str:
        return self.digest[:16]


# -- discovery: pyarrow filesystems, so object stores slot in behind the same two calls ---------


def _filesystem(source: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, base path, URI prefix) for a local folder or a URI pyarrow understands."""
    if "://" in source:
        filesystem, base = pafs.FileSystem.from_uri(source)
        scheme = source.split("://", 1)[0]
        return filesystem, base, "" if scheme == "file" else f"{scheme}://"
    return pafs.LocalFileSystem(), str(source), ""


def discover(filesystem: pafs.FileSystem, base: str) -> list[str]:
    """Every finished upload under ``base`` in a stable order (uploads in flight start with '.')."""
    if filesystem.get_file_info(base).type == pafs.FileType.NotFound:
        return []
    selector = pafs.FileSelector(base, recursive=True)
    return sorted(
        f.path
        for f in filesystem.get_file_info(selector)
        if f.type == pafs.FileType.File
        and f.base_name.endswith(".mcap")
        and not f.base_name.startswith(".")
    )


class _HashingStream:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.sha256.update(data)
        return data

    def drain(self) -> str:
        while self.read(HASH_BLOCK):
            pass
        return self.sha256.hexdigest()


def file_sha256(filesystem: pafs.FileSystem, path: str) -> str:
    with filesystem.open_input_stream(path, compression=None) as stream:
        return _HashingStream(stream).drain()


def _read(filesystem: pafs.FileSystem, path: str, uri: str, digest: str) -> _Upload | None:
    """Parse a new upload in one streamed pass; None if it changed since it was hashed."""
    upload = _Upload(uri=uri, digest=digest)
    with filesystem.open_input_stream(path, compression=None) as stream:
        hashing = _HashingStream(stream)
        try:
            upload.episode = read_episode_mcap(hashing)
        except LogFormatError as exc:
            upload.reason = str(exc)
            return upload
        if hashing.drain() != digest:
            log.warning("%s changed while it was read; it is left for the next run", uri)
            return None
    return upload


# -- the stage ----------------------------------------------------------------------------------


def ingest_logs(
    settings: Settings, *, source: str | None = None, run_id: str | None = None
) -> IngestSummary:
    """Ingest every upload under ``source`` (default: the fleet log store) not yet indexed."""
    source = source or settings.fleet_log_uri
    filesystem, base, prefix = _filesystem(source)
    store = EpisodeStore(settings.episode_store)
    summary = IngestSummary(run_id=run_id or uuid.uuid4().hex[:16])
    with store.lock():
        with session_scope(settings.db_url) as session:
            known = set(session.scalars(select(Episode.content_hash)))
            referenced = set(session.scalars(select(Episode.data_file).distinct()))
        for orphan in store.remove_orphans(referenced - {None}):
            log.warning("removed %s: no episode refers to it (left by a crash)", orphan)
        chunk: list[_Upload] = []
        for path in discover(filesystem, base):
            digest = file_sha256(filesystem, path)
            if digest in known:
                summary.skipped += 1
                continue
            upload = _read(filesystem, path, prefix + path, digest)
            if upload is not None:
                known.add(digest)
                chunk.append(upload)
            if len(chunk) >= CHUNK_FILES:
                _ingest_chunk(settings, store, chunk, summary, source)
                chunk = []
        # The last commit also closes the run: its counts are final by then.
        _ingest_chunk(settings, store, chunk, summary, source, finished=True)
    log.info(
        "ingest %s: %d ingested, %d skipped, %d quarantined",
        summary.run_id,
        summary.ingested,
        summary.skipped,
        summary.quarantined,
    )
    return summary


def _ingest_chunk(
    settings: Settings,
    store: EpisodeStore,
    chunk: list[_Upload],
    summary: IngestSummary,
    source: str,
    *,
    finished: bool = False,
) -> None:
    parsed = [u for u in chunk if u.episode is not None]
    results: list[dict] = []
    if parsed:
        report = validate_frames(
            frame_table((u.episode_id, u.episode) for u in parsed), dims=_dims(store, parsed)
        )
        results.append(report.result)
        for upload in parsed:
            upload.reason = report.reason(upload.episode_id)
    good = [u for u in parsed if u.reason is None]
    bad = [u for u in chunk if u.reason is not None]

    data_file = None
    with session_scope(settings.db_url) as session:
        first = session.scalar(select(func.coalesce(func.max(Episode.episode_index), -1))) + 1
    if good:
        data_file = store.write_batch(
            [(u.episode_id, first + i, u.episode) for i, u in enumerate(good)]
        )
    try:
        with session_scope(settings.db_url) as session:
            run = session.get(IngestRun, summary.run_id)
            if run is None:
                run = IngestRun(id=summary.run_id, source=source)
                session.add(run)
                session.flush()  # the episodes below refer to it
            session.add_all(
                _episode_row(u, summary.run_id, data_file, first + i) for i, u in enumerate(good)
            )
            session.add_all(_episode_row(u, summary.run_id) for u in bad)
            session.flush()  # the interventions below refer to the episodes
            session.add_all(_intervention_rows(good))
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
            run.validation = [*(run.validation or []), *results]
            _count_run(session, run, skipped=summary.skipped, finished=finished)
    except BaseException:
        if data_file is not None:
            store.remove(data_file)
        raise
    if data_file is not None:
        store.write_meta()
    summary.ingested += len(good)
    summary.quarantined += len(bad)
    summary.episode_ids += [u.episode_id for u in good]
    summary.quarantined_files += [(u.uri, u.reason) for u in bad]
    summary.validation += results


def _dims(store: EpisodeStore, parsed: list[_Upload]) -> dict[str, tuple[int, int]]:
    """Expected sizes per task: the store's, or the batch's most common.

    LeRobot's layout gives a feature one shape per dataset, so every task of the store has
    the same embodiment; a batch of a new store follows its majority.
    """
    dims = (
        store.dims()
        or Counter((u.episode.state_dim, u.episode.action_dim) for u in parsed).most_common(1)[0][0]
    )
    return {u.episode.task: dims for u in parsed}


def _count_run(session, run: IngestRun, *, skipped: int, finished: bool) -> None:
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
    if finished:
        run.finished_at = utcnow()


def _episode_row(
    upload: _Upload, run_id: str, data_file: str | None = None, episode_index: int | None = None
) -> Episode:
    raw = upload.episode
    ok = upload.reason is None
    return Episode(
        id=upload.episode_id,
        content_hash=upload.digest,
        episode_index=episode_index if ok else None,
        # What the header says, even when quarantined: which robot sends bad logs matters.
        robot_id=raw.robot_id if raw else None,
        task=raw.task if raw else None,
        policy_version=raw.policy_version if raw else None,
        kind=raw.kind if raw else None,
        started_at=raw.started_at if raw else None,
        duration_s=raw.duration_s if raw and ok else None,
        steps=raw.steps if raw else None,
        outcome=raw.outcome if raw else None,
        n_interventions=len(raw.interventions) if raw and ok else 0,
        source_uri=upload.uri,
        source_format=SOURCE_FORMAT,
        ingest_run_id=run_id,
        status="ok" if ok else "quarantined",
        reason=upload.reason,
        data_file=data_file if ok else None,
    )


def _intervention_rows(good: list[_Upload]) -> Iterator[Intervention]:
    for upload in good:
        for n, span in enumerate(upload.episode.interventions):
            yield Intervention(
                id=f"{upload.episode_id}-{n}",
                episode_id=upload.episode_id,
                start_step=span.start_step,
                end_step=span.end_step,
                kind=span.kind,
                operator_id=span.operator_id,
                reason=span.reason,
            )


def list_episodes(settings: Settings, status: str | None = None) -> list[Episode]:
    with session_scope(settings.db_url) as session:
        query = select(Episode).order_by(Episode.ingested_at, Episode.id)
        if status is not None:
            query = query.where(Episode.status == status)
        return list(session.scalars(query))
