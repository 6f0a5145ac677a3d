"""The ingest stage: new logs in the fleet log store become validated, indexed episodes.

Formats (``sources.py`` finds them, ``readers.py`` picks the reader in ``formats/``): MCAP in
Flywheel's JSON contract or with ROS 2 messages, ROS 1 and ROS 2 bags (``formats/ros.py``,
mapped by the fleet's mapping file), LeRobot v3.0 datasets and robomimic HDF5 files (imported
as demonstrations). ``docs/ingest.md`` tells the whole story.

Idempotent by content. A log holding one stream (an MCAP, a bag) is hashed first, and skipped
when the index already holds its hash (ingested or quarantined), so a bad file is quarantined
once and retried only when its bytes change; its episodes are the hash and, when its outcomes
split it into several, the hash with the episode's number. A container of many episodes
(robomimic, LeRobot) is read episode by episode, and each episode's id is the hash of its own
frames and labels, so a dataset that grows imports only its new episodes.

Deleted episodes stay deleted: a log (or a container's episode) that a tombstone names, by
content hash or by URI, or an episode with a deleted one's frames, is left out and counted as
tombstoned (docs/data-retention.md).

The same episode is stored once: every episode's content digest (``episode_digest``) is
indexed, and a good episode whose digest, or whose robot and logged episode id, match a stored
one is indexed as its duplicate (``index.commit_chunk``), so a copy of a log with other bytes
(a damaged summary section, which the streaming reader never reads) adds nothing to train on.

Quarantined uploads are retried on request (``retry_quarantined``, after a fleet fixes its
mapping): their logs are read again and their quarantined rows replaced; the audit log keeps
the earlier reasons. Tombstones still win.

Crash safety: a chunk of episodes (bounded in episodes and frames, so memory stays flat
whatever the backlog) is written as one Parquet data file first and its index rows after it
in one transaction; if that transaction fails the data file is deleted, and a crash in between
leaves a data file no row refers to, which the next run removes (``EpisodeStore.repair``). The
episodes of one stream always share a chunk. Ingests may run at once, on one machine or
several: they take turns only to commit a chunk, and one that finds an episode indexed by
another at that point skips it (``services/episode_store/index.py``). Source files are only
ever read.
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from services.config import Settings
from services.episode_store import index
from services.episode_store.index import Upload
from services.episode_store.parquet import EpisodeStore
from services.episode_store.videos import IMAGE_PREFIX, camera_reason
from services.episodes.cameras import VideoFormat
from services.episodes.model import LogFormatError, RawEpisode
from services.ingest.mapping import FleetMapping
from services.ingest.readers import read_bag, read_container, read_mcap
from services.ingest.sources import CONTAINERS, HASH_BLOCK, LogUnit, Source
from services.store import session_scope
from services.store.models import Episode, EpisodeTombstone
from services.validation.suite import episode_facts, validate_episodes

log = logging.getLogger(__name__)

# A chunk is written as one Parquet data file: these bound memory whatever the backlog.
CHUNK_EPISODES = 1000
CHUNK_FRAMES = 200_000


@dataclass
class IngestSummary:
    run_id: str
    ingested: int = 0
    # Logs (or, in containers, episodes) the index already held.
    skipped: int = 0
    quarantined: int = 0
    # Logs (or container episodes) left out because a deleted episode's tombstone names them.
    tombstoned: int = 0
    # Good episodes that repeat a stored one: indexed as its duplicates, not stored again.
    duplicates: int = 0
    episode_ids: list[str] = field(default_factory=list)
    # (source uri, reason) of every log or episode quarantined by this run.
    quarantined_files: list[tuple[str, str]] = field(default_factory=list)
    # The validation suites' result summary per chunk.
    validation: list[dict] = field(default_factory=list)


class _HashingRaw(io.RawIOBase):
    """A read-only raw stream that hashes what passes through it, block by block."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.sha256 = hashlib.sha256()
        self._position = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes read so far (a reader's message about a truncated file names it)."""
        return self._position

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        self._position += len(data)
        self.sha256.update(data)
        buffer[: len(data)] = data
        return len(data)


class _HashingStream(io.BufferedReader):
    """Buffered, so the MCAP reader's many small reads cost nothing; hashes the whole file."""

    def __init__(self, stream) -> None:
        self._hashing = _HashingRaw(stream)
        super().__init__(self._hashing, buffer_size=HASH_BLOCK)

    def drain(self) -> str:
        while self.read(HASH_BLOCK):
            pass
        return self._hashing.sha256.hexdigest()


def episode_digest(raw: RawEpisode) -> str:
    """The content hash of one episode: its frames, camera frames and labels (the id of an
    episode in a container; what recognises the same episode uploaded twice)."""
    digest = hashlib.sha256()
    for array in (raw.states, raw.actions, raw.timestamps):
        digest.update(array.tobytes())
    # Each label NUL-terminated, hashed in one update (the same bytes as one update each).
    labels = (*raw.control_source, raw.task, raw.robot_id, raw.kind, raw.outcome)
    digest.update("".join(f"{text}\0" for text in labels).encode())
    digest.update(str(raw.policy_version).encode())
    # Each camera's frames (its track's digest of the aligned pixels), by camera name; an
    # episode without cameras hashes as it did before cameras were stored.
    for name, track in sorted(raw.cameras.items()):
        digest.update(f"{name}\0{track.digest}\0".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Tombstones:
    """What deleted episodes leave behind for ingest to recognise their sources by."""

    hashes: frozenset[str]
    # Deleted episodes' frames digests (``episode_digest``): a copy with other bytes.
    frames: frozenset[str]
    # URIs of container episodes ("<container>#<episode>"), matched exactly.
    episodes: frozenset[str]
    # URIs of log files that held deleted episodes (a re-upload under the same name, with
    # other bytes, e.g. a quarantined log fixed and sent again, is still left out).
    logs: frozenset[str]

    @classmethod
    def load(cls, session) -> Tombstones:
        rows = session.execute(
            select(
                EpisodeTombstone.content_hash,
                EpisodeTombstone.source_uri,
                EpisodeTombstone.source_format,
                EpisodeTombstone.frames_digest,
            )
        ).all()
        return cls(
            hashes=frozenset(digest for digest, _, _, _ in rows),
            frames=frozenset(frames for _, _, _, frames in rows if frames),
            episodes=frozenset(uri for _, uri, fmt, _ in rows if fmt in CONTAINERS),
            logs=frozenset(
                uri.split("#", 1)[0] for _, uri, fmt, _ in rows if fmt not in CONTAINERS
            ),
        )


def _nth(digest: str, n: int) -> str:
    """The hash of a stream's n-th episode: the log's own for the first."""
    return digest if n == 0 else hashlib.sha256(f"{digest}#{n}".encode()).hexdigest()


def _source_uuids(episodes: list[RawEpisode]) -> list[str | None]:
    """The episode id each episode logged, where it names that episode alone: an id that
    several episodes of one log share (a log-wide default) says nothing about duplicates."""
    counts = Counter(raw.episode_uuid for raw in episodes)
    return [
        raw.episode_uuid if raw.episode_uuid and counts[raw.episode_uuid] == 1 else None
        for raw in episodes
    ]


@dataclass
class _Known:
    """What the index held when the run started."""

    # Content hashes to skip: every row's, or on a retry those not quarantined.
    hashes: set[str]
    # On a retry: the logs (URIs without "#<episode>") that have a quarantined row.
    retry_logs: frozenset[str] = frozenset()

    @classmethod
    def load(cls, session, *, retry: bool) -> _Known:
        if not retry:
            return cls(set(session.scalars(select(Episode.content_hash))))
        rows = session.execute(select(Episode.content_hash, Episode.status, Episode.source_uri))
        hashes, logs = set(), set()
        for digest, status, uri in rows:
            if status == "quarantined":
                logs.add(uri.split("#", 1)[0])
            else:
                hashes.add(digest)
        return cls(hashes, frozenset(logs))


# -- reading one unit -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cameras:
    """Where readers write camera tracks (a spool folder of the episode store) and how."""

    directory: Path
    video_format: VideoFormat


def _uploads(
    source: Source,
    unit: LogUnit,
    mapping: FleetMapping,
    known: _Known,
    deleted: Tombstones,
    summary: IngestSummary,
    cameras: Cameras,
) -> Iterator[list[Upload]]:
    """Groups of uploads that must share a chunk: a stream's episodes, or one container episode."""
    if unit.format in CONTAINERS:
        yield from _container(source, unit, mapping, known.hashes, deleted, summary, cameras)
        return
    if unit.uri in deleted.logs:
        summary.tombstoned += 1
        return
    digest = source.sha256(unit)
    if digest in deleted.hashes:
        summary.tombstoned += 1
        return
    if digest in known.hashes and unit.uri not in known.retry_logs:
        summary.skipped += 1
        return
    try:
        if unit.format == "mcap":
            episodes = _read_mcap(source, unit, mapping, digest, cameras)
            if episodes is None:
                return
        else:
            with source.local_path(unit) as path:
                episodes = read_bag(
                    path,
                    mapping,
                    directory=cameras.directory,
                    video_format=cameras.video_format,
                )
    except LogFormatError as exc:
        yield [Upload(unit.uri, digest, unit.format, reason=str(exc))]
        return
    several = len(episodes) > 1
    group = []
    for n, (raw, uuid_) in enumerate(zip(episodes, _source_uuids(episodes), strict=True)):
        frames = episode_digest(raw)
        if frames in deleted.frames:
            summary.tombstoned += 1
            discard_tracks(raw)
            continue
        uri = f"{unit.uri}#episode-{n}" if several else unit.uri
        group.append(
            Upload(uri, _nth(digest, n), unit.format, raw, frames_digest=frames, source_uuid=uuid_)
        )
    if group:
        yield group


def _read_mcap(
    source: Source, unit: LogUnit, mapping: FleetMapping, digest: str, cameras: Cameras
) -> list[RawEpisode] | None:
    """One streamed pass; None if the file changed since it was hashed."""
    with source.open(unit.path) as stream:
        hashing = _HashingStream(stream)
        episodes = read_mcap(
            hashing, mapping, directory=cameras.directory, video_format=cameras.video_format
        )
        if hashing.drain() != digest:
            log.warning("%s changed while it was read; it is left for the next run", unit.uri)
            for raw in episodes:
                discard_tracks(raw)
            return None
    return episodes


def discard_tracks(raw: RawEpisode | None) -> None:
    """Remove an episode's camera tracks from the spool (packed, or never to be)."""
    for track in raw.cameras.values() if raw is not None else ():
        track.discard()


def _container(
    source: Source,
    unit: LogUnit,
    mapping: FleetMapping,
    known: set[str],
    deleted: Tombstones,
    summary: IngestSummary,
    cameras: Cameras,
) -> Iterator[list[Upload]]:
    with source.local_path(unit) as path:
        episodes = read_container(
            unit.format,
            path,
            mapping,
            unit.modified,
            directory=cameras.directory,
            video_format=cameras.video_format,
        )
        try:
            for key, result in episodes:
                uri = f"{unit.uri}#{key}"
                if isinstance(result, LogFormatError):
                    # No frames to hash: the log's identity and what is wrong with it.
                    digest = hashlib.sha256(f"{uri}\n{result}".encode()).hexdigest()
                    upload = Upload(uri, digest, unit.format, reason=str(result))
                else:
                    digest = episode_digest(result)
                    upload = Upload(
                        uri,
                        digest,
                        unit.format,
                        result,
                        frames_digest=digest,
                        source_uuid=result.episode_uuid or None,
                    )
                if (
                    upload.digest in deleted.hashes
                    or upload.digest in deleted.frames
                    or uri in deleted.episodes
                ):
                    summary.tombstoned += 1
                    discard_tracks(upload.episode)
                    continue
                if upload.digest in known:
                    summary.skipped += 1
                    discard_tracks(upload.episode)
                    continue
                yield [upload]
        except LogFormatError as exc:  # the container itself is unreadable
            digest = source.sha256(unit)
            if digest in deleted.hashes or unit.uri in deleted.episodes:
                summary.tombstoned += 1
                return
            if digest in known:
                summary.skipped += 1
                return
            yield [Upload(unit.uri, digest, unit.format, reason=str(exc))]


# -- the stage ----------------------------------------------------------------------------------


def ingest_logs(
    settings: Settings,
    *,
    source: str | None = None,
    mapping: FleetMapping | None = None,
    run_id: str | None = None,
    retry_quarantined: bool = False,
) -> IngestSummary:
    """Ingest every log under ``source`` (default: the fleet log store) not yet indexed.

    ``mapping`` is the fleet's mapping file (``mapping.load_mapping``); the default reads
    Flywheel's own topic contracts. ``retry_quarantined`` reads quarantined uploads again
    (after the mapping was fixed) and replaces their quarantined rows with the new outcome.
    """
    source = source or settings.fleet_log_uri
    mapping = mapping or FleetMapping()
    logs = Source(source)
    store = EpisodeStore(settings.episode_store)
    summary = IngestSummary(run_id=run_id or uuid.uuid4().hex[:16])
    index.repair(settings.db_url, store)
    with session_scope(settings.db_url) as session:
        known = _Known.load(session, retry=retry_quarantined)
        deleted = Tombstones.load(session)
    video_format = VideoFormat.from_settings(settings.video)
    chunk: list[Upload] = []
    frames = 0
    with store.spool() as spool:
        cameras = Cameras(spool, video_format)
        for unit in logs.discover():
            for group in _uploads(logs, unit, mapping, known, deleted, summary, cameras):
                known.hashes.update(u.digest for u in group)
                chunk += group
                frames += sum(u.episode.steps for u in group if u.episode is not None)
                if len(chunk) >= CHUNK_EPISODES or frames >= CHUNK_FRAMES:
                    _ingest_chunk(
                        settings, store, chunk, summary, source, mapping, retry_quarantined
                    )
                    chunk, frames = [], 0
        # The last commit also closes the run: its counts are final by then.
        _ingest_chunk(
            settings, store, chunk, summary, source, mapping, retry_quarantined, finished=True
        )
    log.info(
        "ingest %s: %d ingested, %d duplicates, %d skipped, %d quarantined, %d tombstoned",
        summary.run_id,
        summary.ingested,
        summary.duplicates,
        summary.skipped,
        summary.quarantined,
        summary.tombstoned,
    )
    return summary


def _ingest_chunk(
    settings: Settings,
    store: EpisodeStore,
    chunk: list[Upload],
    summary: IngestSummary,
    source: str,
    mapping: FleetMapping,
    retry: bool = False,
    *,
    finished: bool = False,
) -> None:
    parsed = [u for u in chunk if u.episode is not None]
    results: list[dict] = []
    if parsed:
        dims = _dims(store, parsed)
        report = validate_episodes(
            episode_facts(
                ((u.episode_id, u.episode) for u in parsed), mapping.embodiments, mapping.cameras
            ),
            dims=dims,
            embodiments=mapping.embodiments,
        )
        results.append(report.result)
        for upload in parsed:
            upload.reason = report.reason(upload.episode_id) or _shape_reason(upload, dims)
        # A new store's cameras follow the batch's good episodes, not its broken ones.
        expected = _cameras(store, [u for u in parsed if u.reason is None])
        for upload in parsed:
            upload.reason = upload.reason or _camera_reason(upload, expected)
    # Another ingest (on this machine or another) may index some of these first: they are
    # skipped, as if this one had found them indexed when it started.
    try:
        indexed, lost = index.commit_chunk(
            settings.db_url,
            store,
            chunk,
            run_id=summary.run_id,
            source=source,
            validation=results,
            skipped=summary.skipped,
            tombstoned=summary.tombstoned,
            finished=finished,
            retry=retry,
        )
    finally:
        # Packed into the store's video files, quarantined, or indexed by another ingest first:
        # either way the chunk's tracks are done with.
        for upload in chunk:
            discard_tracks(upload.episode)
    good = [u for u in indexed if u.status == "ok"]
    bad = [u for u in indexed if u.status == "quarantined"]
    summary.skipped += lost
    summary.ingested += len(good)
    summary.duplicates += sum(u.status == "duplicate" for u in indexed)
    summary.quarantined += len(bad)
    summary.episode_ids += [u.episode_id for u in good]
    summary.quarantined_files += [(u.uri, u.reason) for u in bad]
    summary.validation += results


def _dims(store: EpisodeStore, parsed: list[Upload]) -> dict[str, tuple[int, int]]:
    """Expected sizes per task: the store's, or the batch's most common.

    LeRobot's layout gives a feature one shape per dataset, so every task of the store has
    the same embodiment; a batch of a new store follows its majority.
    """
    dims = (
        store.dims()
        or Counter((u.episode.state_dim, u.episode.action_dim) for u in parsed).most_common(1)[0][0]
    )
    return {u.episode.task: dims for u in parsed}


def _shape_reason(upload: Upload, dims: dict[str, tuple[int, int]]) -> str | None:
    """An episode its embodiment accepts may still not fit the store's one shape per feature."""
    raw = upload.episode
    expected = dims[raw.task]
    if (raw.state_dim, raw.action_dim) == expected:
        return None
    return (
        f"sizes (state {raw.state_dim}, action {raw.action_dim}) differ from the episode store's "
        f"(state {expected[0]}, action {expected[1]}): the LeRobot layout holds one shape per "
        "feature, so ingest this embodiment into its own FLYWHEEL_HOME"
    )


def _cameras(store: EpisodeStore, parsed: list[Upload]) -> dict[str, tuple[int, int]]:
    """The cameras every episode must have, ``{key: (width, height)}``: the store's, or the
    batch's most common for a new store (like ``_dims``)."""
    known = store.cameras()
    if known is not None:
        return known
    if not parsed:
        return {}
    shapes = Counter(tuple(sorted(_camera_shapes(u.episode).items())) for u in parsed)
    return dict(shapes.most_common(1)[0][0])


def _camera_shapes(raw: RawEpisode) -> dict[str, tuple[int, int]]:
    return {
        f"{IMAGE_PREFIX}{name}": (track.facts.width, track.facts.height)
        for name, track in raw.cameras.items()
    }


def _camera_reason(upload: Upload, expected: dict[str, tuple[int, int]]) -> str | None:
    """The store holds each camera at one resolution, and every episode has them all."""
    for name, track in sorted(upload.episode.cameras.items()):
        if track.path is None:
            # Validation names what went wrong with the frames; this only keeps an episode
            # with a camera and no video out of the store, whatever it missed.
            return f"camera {name}: its frames make no video, so the episode cannot be stored"
    return camera_reason(_camera_shapes(upload.episode), expected)
