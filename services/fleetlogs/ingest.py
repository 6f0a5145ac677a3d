"""The ingest stage: new uploads in the fleet log store become validated, indexed episodes.

Idempotent by content: an episode's id is the hash of its file, and a file whose hash the
index already holds (ingested or quarantined) is skipped. For each chunk of files the Parquet
data file is written first and the index rows after it in one transaction; if that
transaction fails the data file is deleted, and a crash in between leaves a data file no
row refers to, which the next run removes. Source files are only ever read.
"""

from __future__ import annotations

import hashlib
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
from services.validation.suite import Embodiment, frame_table, validate_frames

# Files per Parquet data file: bounds memory whatever the size of the backlog.
CHUNK_FILES = 200


@dataclass
class IngestSummary:
    run_id: str
    ingested: int = 0
    skipped: int = 0
    quarantined: int = 0
    episode_ids: list[str] = field(default_factory=list)
    quarantined_files: list[tuple[str, str]] = field(default_factory=list)


def _filesystem(source: str) -> tuple[pafs.FileSystem, str]:
    """A local folder, or any URI pyarrow's filesystems understand (file://, s3://, gs://...)."""
    if "://" in source:
        return pafs.FileSystem.from_uri(source)
    return pafs.LocalFileSystem(), str(source)


def discover(source: str) -> Iterator[tuple[pafs.FileSystem, str]]:
    """Every finished upload under ``source`` in a stable order (partial uploads start with '.')."""
    filesystem, base = _filesystem(source)
    info = filesystem.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        return
    selector = pafs.FileSelector(base, recursive=True)
    paths = sorted(
        f.path
        for f in filesystem.get_file_info(selector)
        if f.type == pafs.FileType.File
        and f.path.endswith(".mcap")
        and not f.base_name.startswith(".")
    )
    for path in paths:
        yield filesystem, path


def ingest_logs(
    settings: Settings, *, source: str | None = None, run_id: str | None = None
) -> IngestSummary:
    source = source or settings.fleet_log_uri
    store = EpisodeStore(settings.episode_store)
    summary = IngestSummary(run_id=run_id or uuid.uuid4().hex[:16])
    with session_scope(settings.db_url) as session:
        referenced = set(
            session.scalars(select(Episode.data_file).where(Episode.data_file.is_not(None)))
        )
        known = set(session.scalars(select(Episode.content_hash)))
        if session.get(IngestRun, summary.run_id) is None:
            session.add(IngestRun(id=summary.run_id, source=source))
    store.remove_orphans(referenced)

    chunk: list[tuple[str, str, bytes]] = []
    for filesystem, path in discover(source):
        with filesystem.open_input_stream(path) as stream:
            data = stream.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest in known:
            summary.skipped += 1
            continue
        known.add(digest)
        chunk.append((path, digest, data))
        if len(chunk) >= CHUNK_FILES:
            _ingest_chunk(settings, store, chunk, summary)
            chunk = []
    if chunk:
        _ingest_chunk(settings, store, chunk, summary)

    with session_scope(settings.db_url) as session:
        run = session.get(IngestRun, summary.run_id)
        run.ingested += summary.ingested
        run.skipped += summary.skipped
        run.quarantined += summary.quarantined
        run.finished_at = utcnow()
    return summary


def _ingest_chunk(
    settings: Settings,
    store: EpisodeStore,
    chunk: list[tuple[str, str, bytes]],
    summary: IngestSummary,
) -> None:
    good: list[tuple[str, str, str, RawEpisode]] = []  # (path, hash, episode id, episode)
    bad: list[tuple[str, str, str]] = []  # (path, hash, reason)
    for path, digest, data in chunk:
        try:
            good.append((path, digest, digest[:16], read_episode_mcap(data)))
        except LogFormatError as exc:
            bad.append((path, digest, str(exc)))
    if good:
        report = validate_frames(
            frame_table([(eid, raw) for _, _, eid, raw in good]), _embodiment(store, good)
        )
        bad += [
            (p, d, "; ".join(report.failures[e])) for p, d, e, _ in good if e in report.failures
        ]
        good = [g for g in good if g[2] not in report.failures]

    data_file, table = None, None
    with session_scope(settings.db_url) as session:
        first_episode = (
            session.scalar(select(func.coalesce(func.max(Episode.episode_index), -1))) + 1
        )
        first_frame = session.scalar(
            select(func.coalesce(func.sum(Episode.steps), 0)).where(Episode.status == "ok")
        )
    if good:
        data_file, table = store.write_batch(
            [(eid, first_episode + i, raw) for i, (_, _, eid, raw) in enumerate(good)],
            first_index=first_frame,
        )
    try:
        with session_scope(settings.db_url) as session:
            for i, (path, digest, eid, raw) in enumerate(good):
                session.add(
                    _episode_row(
                        eid, digest, path, raw, summary.run_id, data_file, first_episode + i
                    )
                )
            session.flush()
            for _, _, eid, raw in good:
                session.add_all(
                    Intervention(
                        id=f"{eid}-{n}",
                        episode_id=eid,
                        start_step=s.start_step,
                        end_step=s.end_step,
                        kind=s.kind,
                        operator_id=s.operator_id,
                        reason=s.reason,
                    )
                    for n, s in enumerate(raw.interventions)
                )
            for path, digest, reason in bad:
                session.add(
                    Episode(
                        id=digest[:16],
                        content_hash=digest,
                        source_uri=path,
                        source_format="mcap",
                        ingest_run_id=summary.run_id,
                        status="quarantined",
                        reason=reason,
                    )
                )
                record_audit(
                    session,
                    actor="ingest",
                    action="quarantine",
                    subject_type="episode",
                    subject_id=digest[:16],
                    after={"source": path},
                    reason=reason,
                )
            totals = session.execute(
                select(func.count(), func.coalesce(func.sum(Episode.steps), 0)).where(
                    Episode.status == "ok"
                )
            ).one()
    except BaseException:
        if data_file is not None:
            store.remove(data_file)
        raise
    if table is not None:
        fps = Counter(raw.control_hz for *_, raw in good).most_common(1)[0][0]
        store.update_meta(table, total_episodes=totals[0], total_frames=int(totals[1]), fps=fps)
    summary.ingested += len(good)
    summary.quarantined += len(bad)
    summary.episode_ids += [eid for _, _, eid, _ in good]
    summary.quarantined_files += [(path, reason) for path, _, reason in bad]


def _embodiment(store: EpisodeStore, good: list) -> Embodiment:
    """The fleet's state and action sizes: the store's, or the batch's most common ones."""
    info = store.info().get("features", {})
    if "observation.state" in info:
        return Embodiment(info["observation.state"]["shape"][0], info["action"]["shape"][0])
    dims = Counter((raw.states.shape[1], raw.actions.shape[1]) for *_, raw in good)
    return Embodiment(*dims.most_common(1)[0][0])


def _episode_row(eid, digest, path, raw: RawEpisode, run_id, data_file, episode_index) -> Episode:
    return Episode(
        id=eid,
        content_hash=digest,
        episode_index=episode_index,
        robot_id=raw.robot_id,
        task=raw.task,
        policy_version=raw.policy_version,
        kind=raw.kind,
        started_at=raw.started_at,
        duration_s=raw.duration_s,
        steps=raw.steps,
        outcome=raw.outcome,
        n_interventions=len(raw.interventions),
        source_uri=path,
        source_format="mcap",
        ingest_run_id=run_id,
        status="ok",
        data_file=data_file,
    )


def list_episodes(settings: Settings, status: str | None = None) -> list[Episode]:
    with session_scope(settings.db_url) as session:
        query = select(Episode).order_by(Episode.ingested_at, Episode.id)
        if status is not None:
            query = query.where(Episode.status == status)
        return list(session.scalars(query))
