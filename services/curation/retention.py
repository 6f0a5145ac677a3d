"""Retention: raw uploads and episodes older than their configured age are removed.

``FLYWHEEL_RETENTION_RAW_DAYS`` ages the fleet log store's logs by their modification time;
``FLYWHEEL_RETENTION_EPISODE_DAYS`` ages the indexed episodes by when they were recorded
(when they were ingested, for a log without a start time). Unset keeps them forever, the
default. Expired episodes go through the deletion path (``services/curation/deletion.py``):
tombstones, dataset marks, one audit event with actor ``retention``, and their stored frames
(Parquet rows and camera frames in the video files) removed from the episode store.

The lineage rule: episodes the current champion was trained on (its dataset and its
ancestors', ``champion_episodes``) are kept while it is champion, so that the model the
fleet runs can still be retrained from its data; they expire at the first run after another
model takes over. Any other dataset that used an expired episode is marked no longer
reproducible. `flows/retention.py` runs this on a schedule (`flywheel deploy`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from services.config import Settings
from services.curation.deletion import DeletionReport, recorded_at_or_after, remove_episodes
from services.curation.manifest import champion_episodes
from services.ingest.sources import Source
from services.store import record_audit, session_scope
from services.store.models import Episode, utcnow

log = logging.getLogger(__name__)

ACTOR = "retention"


@dataclass
class RetentionReport:
    raw_days: float | None
    episode_days: float | None
    dry_run: bool
    # URIs of the raw uploads removed (a dry run: that would be).
    raw_removed: list[str] = field(default_factory=list)
    # Expired episodes kept because the current champion's lineage was trained on them.
    kept_for_champion: list[str] = field(default_factory=list)
    episodes: DeletionReport | None = None


def apply_retention(
    settings: Settings, *, now: datetime | None = None, dry_run: bool = False
) -> RetentionReport:
    """Remove what is older than the configured ages; ``now`` for tests and backfills."""
    now = now or utcnow()
    policy = settings.retention
    report = RetentionReport(policy.raw_days, policy.episode_days, dry_run)
    if policy.raw_days is not None:
        report.raw_removed = _expire_raw(settings, now - timedelta(days=policy.raw_days), dry_run)
        if report.raw_removed and not dry_run:
            with session_scope(settings.db_url) as session:
                record_audit(
                    session,
                    actor=ACTOR,
                    action="remove-raw-uploads",
                    subject_type="uploads",
                    subject_id=hashlib.sha256("\n".join(report.raw_removed).encode()).hexdigest()[
                        :16
                    ],
                    after={"source": settings.fleet_log_uri, "uris": report.raw_removed},
                    reason=f"retention: modified more than {policy.raw_days:g} days ago",
                )
    if policy.episode_days is not None:
        cutoff = now - timedelta(days=policy.episode_days)
        with session_scope(settings.db_url) as session:
            expired = list(session.scalars(select(Episode.id).where(~recorded_at_or_after(cutoff))))
            needed = champion_episodes(session)
        report.kept_for_champion = sorted(e for e in expired if e in needed)
        doomed = [e for e in expired if e not in needed]
        if doomed:
            report.episodes = remove_episodes(
                settings,
                episode_ids=doomed,
                reason=f"retention: recorded more than {policy.episode_days:g} days before "
                f"{now.isoformat(timespec='seconds')}",
                actor=ACTOR,
                dry_run=dry_run,
            )
    log.info(
        "retention: %d raw uploads, %d episodes removed, %d kept for the champion%s",
        len(report.raw_removed),
        len(report.episodes.episode_ids) if report.episodes else 0,
        len(report.kept_for_champion),
        " (dry run)" if dry_run else "",
    )
    return report


def _expire_raw(settings: Settings, cutoff: datetime, dry_run: bool) -> list[str]:
    """Logs in the fleet log store last modified before ``cutoff``, removed unless a dry run.

    Whether ingested or not: retention is a promise about how long data is kept. A deleted
    episode's tombstone, not its log, keeps it from coming back.
    """
    logs = Source(settings.fleet_log_uri)
    expired = [unit for unit in logs.discover() if unit.modified < cutoff]
    if not dry_run:
        for unit in expired:
            logs.remove(unit)
    return [unit.uri for unit in expired]
