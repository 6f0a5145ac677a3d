"""Deleting episodes: their frames, their index rows, and every future dataset's use of them.

A deletion, on request (``delete_episodes``: by robot, time range or ids) or by retention
(``services/curation/retention.py``), does in one transaction, holding the episode index's
writer lock: a tombstone per episode (``episode_tombstones``: its content hash and source URI,
so that ingest never brings it back), its index rows removed (episode, interventions, dataset
memberships, so curation cannot pick it), every dataset that used it marked no longer
reproducible, and one audit event. Then each data store rewrites the files the episodes
shared with others without them. The tombstones are the record of what must go: a crash
after the commit leaves frames that the next ingest's repair (or the same deletion run again)
removes.

Data stores: the episode store, whose ``files_holding`` and ``drop_episodes`` cover its
Parquet data files and its camera video files (a deleted episode's frames are cut out of the
MP4s it shares with others). Another store holding episode data would join ``data_stores``
with the same two methods. It lives in curation, not in the episode store, because it answers
which datasets and models used the episodes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from services.config import Settings
from services.episode_store.index import writer_lock
from services.episode_store.parquet import EpisodeStore
from services.registry.ledger import champion_of
from services.store import record_audit, session_scope
from services.store.models import (
    Candidate,
    Dataset,
    DatasetEpisode,
    Episode,
    EpisodeTombstone,
    Intervention,
    utcnow,
)

# Ids per IN (...) clause: well under SQLite's limit on bound parameters.
BATCH = 500


class DeletionError(ValueError):
    """The request cannot be carried out as given; nothing was deleted."""


class DataStore(Protocol):
    """Where an episode's data lies in files shared with other episodes."""

    def files_holding(self, episode_ids: set[str]) -> list[str]: ...

    def drop_episodes(self, episode_ids: set[str]) -> list[str]: ...


def data_stores(settings: Settings) -> list[DataStore]:
    """Every store that holds episode data: the episode store (Parquet frames and videos)."""
    return [EpisodeStore(settings.episode_store)]


@dataclass(frozen=True)
class ModelUse:
    """A candidate (and its registered model version) that learnt from deleted episodes."""

    candidate_id: str
    model_version: str | None
    status: str
    dataset_id: str
    # "dataset <id>" when trained on a dataset that used them, "version <v>" when
    # fine-tuned from a model that did (it carries what its parent learnt).
    via: str
    champion: bool


@dataclass
class DeletionReport:
    episode_ids: list[str]
    robots: dict[str, int]
    reason: str
    actor: str
    dry_run: bool
    # Asked for by id, deleted before: nothing left to delete but leftover frames.
    already_deleted: list[str] = field(default_factory=list)
    # Data and video files rewritten without the episodes (a dry run: that would be).
    data_files: list[str] = field(default_factory=list)
    # Datasets that used them, now (a dry run: to be) marked no longer reproducible.
    datasets: list[str] = field(default_factory=list)
    models: list[ModelUse] = field(default_factory=list)


def delete_episodes(
    settings: Settings,
    *,
    reason: str,
    actor: str,
    robots: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    ids: Sequence[str] = (),
    dry_run: bool = False,
) -> DeletionReport:
    """Delete the episodes that match every selector given (robots, started in
    [since, until), ids); at least one is required. Unknown ids are refused."""
    if not reason or not reason.strip():
        raise DeletionError("a reason is required: it goes into the audit log and tombstones")
    if not (robots or ids or since or until):
        raise DeletionError("choose what to delete: --robot, --since/--until or --ids")
    for moment in (since, until):
        if moment is not None and moment.tzinfo is None:
            raise DeletionError(f"{moment} has no time zone: give UTC or an offset")
    if since is not None and until is not None and since >= until:
        raise DeletionError(
            f"--since {since.isoformat()} is not before --until {until.isoformat()}"
        )
    with session_scope(settings.db_url) as session:
        found, already = _select(session, robots=robots, since=since, until=until, ids=ids)
    if not found and not already:
        raise DeletionError("no indexed episode matches the selection: nothing was deleted")
    return remove_episodes(
        settings,
        episode_ids=found,
        reason=reason.strip(),
        actor=actor,
        dry_run=dry_run,
        already_deleted=already,
    )


def _select(
    session: Session,
    *,
    robots: Sequence[str],
    since: datetime | None,
    until: datetime | None,
    ids: Sequence[str],
) -> tuple[list[str], list[str]]:
    """The matching episode ids, and the asked-for ids that were deleted before."""
    query = select(Episode.id).order_by(Episode.id)
    if robots:
        query = query.where(Episode.robot_id.in_(list(robots)))
    if since is not None:
        query = query.where(recorded_at_or_after(since))
    if until is not None:
        query = query.where(~recorded_at_or_after(until))
    if not ids:
        return list(session.scalars(query)), []
    found, already, indexed = [], [], set()
    asked = list(dict.fromkeys(ids))
    for part in _batches(asked):
        found += session.scalars(query.where(Episode.id.in_(part)))
        already += session.scalars(
            select(EpisodeTombstone.episode_id).where(EpisodeTombstone.episode_id.in_(part))
        )
        indexed.update(session.scalars(select(Episode.id).where(Episode.id.in_(part))))
    unknown = [i for i in asked if i not in indexed and i not in already]
    if unknown:
        raise DeletionError(
            f"no episode with id {', '.join(unknown[:10])}"
            f"{f' (and {len(unknown) - 10} more)' if len(unknown) > 10 else ''}: nothing was "
            "deleted (see `flywheel episodes`)"
        )
    return sorted(found), sorted(already)


def recorded_at_or_after(moment: datetime):
    """Episodes recorded at or after ``moment`` (ingested then, when the log has no start)."""
    return or_(
        Episode.started_at >= moment,
        Episode.started_at.is_(None) & (Episode.ingested_at >= moment),
    )


def remove_episodes(
    settings: Settings,
    *,
    episode_ids: Sequence[str],
    reason: str,
    actor: str,
    dry_run: bool = False,
    already_deleted: Sequence[str] = (),
) -> DeletionReport:
    """Delete these indexed episodes (the path shared by requests and retention)."""
    ids = sorted(set(episode_ids))
    stores = data_stores(settings)
    if dry_run:
        with session_scope(settings.db_url) as session:
            report, _ = _report(session, ids, reason, actor, dry_run=True)
        report.data_files = sorted({f for s in stores for f in s.files_holding(set(ids))})
        report.already_deleted = list(already_deleted)
        return report
    with writer_lock(settings.db_url, EpisodeStore(settings.episode_store)):
        with session_scope(settings.db_url, write=True) as session:
            report, used = _report(session, ids, reason, actor, dry_run=False)
            if ids:
                _commit(session, report, used)
        # After the commit: a crash from here on leaves frames the tombstones name, which
        # ingest's repair (or this deletion run again) removes.
        gone = set(ids) | set(already_deleted)
        report.data_files = sorted({f for s in stores for f in s.drop_episodes(gone)})
    report.already_deleted = list(already_deleted)
    return report


def _report(
    session: Session, ids: list[str], reason: str, actor: str, *, dry_run: bool
) -> tuple[DeletionReport, dict[str, list[str]]]:
    """The report, and the datasets each episode is in. Only episodes still indexed count:
    the selection was made before the writer lock was taken."""
    robots: Counter[str] = Counter()
    used: dict[str, list[str]] = {}
    indexed: list[str] = []
    for part in _batches(ids):
        for episode_id, robot in session.execute(
            select(Episode.id, Episode.robot_id).where(Episode.id.in_(part))
        ):
            indexed.append(episode_id)
            robots[robot] += 1
        for dataset_id, episode_id in session.execute(
            select(DatasetEpisode.dataset_id, DatasetEpisode.episode_id).where(
                DatasetEpisode.episode_id.in_(part)
            )
        ):
            used.setdefault(episode_id, []).append(dataset_id)
    datasets = sorted({d for ds in used.values() for d in ds})
    report = DeletionReport(
        episode_ids=sorted(indexed),
        robots={robot or "(unknown)": n for robot, n in sorted(robots.items(), key=str)},
        reason=reason,
        actor=actor,
        dry_run=dry_run,
        datasets=datasets,
        models=models_trained_on(session, datasets),
    )
    return report, used


def models_trained_on(session: Session, datasets: Sequence[str]) -> list[ModelUse]:
    """Candidates trained on these datasets, and every model fine-tuned from one of them."""
    champion = champion_of(session=session)
    uses: list[ModelUse] = []
    seen: set[str] = set()
    layer = list(
        session.scalars(
            select(Candidate)
            .where(Candidate.dataset_id.in_(list(datasets)))
            .order_by(Candidate.created_at)
        )
    )
    while layer:
        for candidate in layer:
            seen.add(candidate.id)
            via = (
                f"dataset {candidate.dataset_id}"
                if candidate.dataset_id in datasets
                else f"version {candidate.parent_version}"
            )
            uses.append(
                ModelUse(
                    candidate_id=candidate.id,
                    model_version=candidate.model_version,
                    status=candidate.status,
                    dataset_id=candidate.dataset_id,
                    via=via,
                    champion=champion is not None and candidate.model_version == champion,
                )
            )
        versions = [c.model_version for c in layer if c.model_version is not None]
        layer = [
            c
            for c in session.scalars(
                select(Candidate)
                .where(Candidate.parent_version.in_(versions))
                .order_by(Candidate.created_at)
            )
            if c.id not in seen
        ]
    return uses


def _commit(session: Session, report: DeletionReport, used: dict[str, list[str]]) -> None:
    now = utcnow()
    ids = report.episode_ids
    for part in _batches(ids):
        for episode in session.scalars(select(Episode).where(Episode.id.in_(part))):
            session.add(
                EpisodeTombstone(
                    episode_id=episode.id,
                    content_hash=episode.content_hash,
                    frames_digest=episode.frames_digest,
                    source_uri=episode.source_uri,
                    source_format=episode.source_format,
                    robot_id=episode.robot_id,
                    datasets=sorted(used.get(episode.id, [])),
                    deleted_at=now,
                    reason=report.reason,
                    actor=report.actor,
                )
            )
        session.execute(delete(Intervention).where(Intervention.episode_id.in_(part)))
        session.execute(delete(DatasetEpisode).where(DatasetEpisode.episode_id.in_(part)))
        session.execute(delete(Episode).where(Episode.id.in_(part)))
    for dataset in session.scalars(select(Dataset).where(Dataset.id.in_(report.datasets))):
        if dataset.unreproducible_at is None:
            dataset.unreproducible_at = now
            dataset.unreproducible_reason = (
                f"episodes it used were deleted by {report.actor}: {report.reason}"
            )
    record_audit(
        session,
        actor=report.actor,
        action="delete-episodes",
        subject_type="episodes",
        subject_id=hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
        before={"episodes": ids, "robots": report.robots},
        after={
            "datasets_not_reproducible": report.datasets,
            "models": [
                {"candidate_id": m.candidate_id, "model_version": m.model_version}
                for m in report.models
            ],
        },
        reason=report.reason,
    )


def _batches(ids: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), BATCH):
        yield list(ids[start : start + BATCH])
