"""The SQL index of everything Flywheel knows: fleet, episodes, datasets, models, decisions.

Frames live in the Parquet episode store; these rows say where, and how each stage's output
links to the next, so lineage can be walked both ways. Every timestamp is timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive timestamps and drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: Flywheel stores timezone-aware UTC timestamps")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class Robot(Base):
    __tablename__ = "robots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    group: Mapped[str] = mapped_column(String(64), default="default")
    tasks: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The model version the robot is told to run (its assignment); None: not assigned yet.
    policy_version: Mapped[str | None] = mapped_column(String(32))
    # The assignment before the current one and when it changed: a robot switches versions
    # between heartbeats, so for a grace period it may still report the previous one.
    previous_version: Mapped[str | None] = mapped_column(String(32))
    assigned_at: Mapped[datetime | None]
    # SHA-256 of the robot's credential (shown once, at enrollment or rotation); None: the
    # robot is not enrolled, or its credential was revoked.
    credential_hash: Mapped[str | None] = mapped_column(String(128), unique=True, index=True)
    credential_issued_at: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # engineer | fleet-manager | admin
    role: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IngestRun(Base):
    __tablename__ = "ingest_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    ingested: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    quarantined: Mapped[int] = mapped_column(default=0)
    # Logs (or container episodes) left out because a deleted episode's tombstone names them.
    tombstoned: Mapped[int] = mapped_column(default=0)
    # Episodes indexed as duplicates of stored ones (their frames not stored again).
    duplicates: Mapped[int] = mapped_column(default=0, server_default="0")
    # The validation suite's result summary, one entry per chunk of files validated.
    validation: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class Episode(Base):
    __tablename__ = "episodes"

    # First 16 hex characters of the source file's SHA-256: the same upload is the same episode.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # LeRobot's integer episode index in the episode store; None while quarantined.
    episode_index: Mapped[int | None] = mapped_column(unique=True)
    robot_id: Mapped[str | None] = mapped_column(String(64), index=True)
    task: Mapped[str | None] = mapped_column(String(64), index=True)
    policy_version: Mapped[str | None] = mapped_column(String(32), index=True)
    kind: Mapped[str | None] = mapped_column(String(16))  # demo | deployment
    started_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[int | None]
    outcome: Mapped[str | None] = mapped_column(String(16))  # success|failure|aborted|unknown
    n_interventions: Mapped[int] = mapped_column(default=0)
    source_uri: Mapped[str] = mapped_column(Text)
    source_format: Mapped[str] = mapped_column(String(32))
    ingest_run_id: Mapped[str | None] = mapped_column(ForeignKey("ingest_runs.id"), index=True)
    # ok | quarantined | duplicate (of a stored episode: indexed, its frames not stored again)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    reason: Mapped[str | None] = mapped_column(Text)
    # The episode's content digest (frames, cameras and labels: ``batch.episode_digest``),
    # whatever bytes its log had: two uploads of one episode have the same.
    frames_digest: Mapped[str | None] = mapped_column(String(64), index=True)
    # The episode's own id as the robot logged it (episode_uuid), where it logged one.
    source_episode_uuid: Mapped[str | None] = mapped_column(String(128), index=True)
    # For a duplicate: the id of the stored episode it repeats.
    duplicate_of: Mapped[str | None] = mapped_column(String(64))
    # Parquet file of the episode store holding its frames, relative to the store root.
    data_file: Mapped[str | None] = mapped_column(Text)
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)

    interventions: Mapped[list[Intervention]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", order_by="Intervention.start_step"
    )


class Intervention(Base):
    __tablename__ = "interventions"

    # "<episode id>-<n>": stable across re-ingests of the same file.
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id"), index=True)
    start_step: Mapped[int]
    end_step: Mapped[int]  # exclusive
    kind: Mapped[str] = mapped_column(String(16))  # takeover | correction | e-stop
    operator_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)

    episode: Mapped[Episode] = relationship(back_populates="interventions")


class Dataset(Base):
    __tablename__ = "datasets"

    # The manifest's content hash: building the same manifest twice gives the same id.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scheme: Mapped[str] = mapped_column(String(32))
    n_episodes: Mapped[int]
    n_steps: Mapped[int]
    # Share of the steps that come from episodes already used by earlier datasets.
    replay_share: Mapped[float] = mapped_column(Float, default=0.0)
    class_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set when episodes it used were deleted: its manifest names frames that are gone, so
    # training on it again cannot give the same model (docs/data-retention.md).
    unreproducible_at: Mapped[datetime | None]
    unreproducible_reason: Mapped[str | None] = mapped_column(Text)


class DatasetEpisode(Base):
    """Which episodes a dataset uses: the join that lineage walks in both directions."""

    __tablename__ = "dataset_episodes"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id"), primary_key=True)
    weight_sum: Mapped[float] = mapped_column(Float, default=0.0)


class EpisodeTombstone(Base):
    """What is left of a deleted episode: enough to keep its source from coming back.

    Ingest skips a log whose content hash, or (for a file of its own) whose URI, a tombstone
    names: re-ingesting the same bytes, or a re-upload of a quarantined log under the same
    name, does not bring a deleted episode back.
    """

    __tablename__ = "episode_tombstones"

    episode_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The hash ingest dedupes on (services/ingest/batch.py): the log's, or the episode's.
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The episode's frames digest: a copy of its log with other bytes stays out too.
    frames_digest: Mapped[str | None] = mapped_column(String(64), index=True)
    source_uri: Mapped[str] = mapped_column(Text)
    source_format: Mapped[str] = mapped_column(String(32))
    robot_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # The datasets that had used it (each marked no longer reproducible).
    datasets: Mapped[list[str]] = mapped_column(JSON, default=list)
    deleted_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(64))


class Candidate(Base):
    __tablename__ = "candidates"

    # Derived from content: hash of (dataset id, parent version, training config, code version).
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(128))
    # MLflow model version, set once registered.
    model_version: Mapped[str | None] = mapped_column(String(32), unique=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    parent_version: Mapped[str | None] = mapped_column(String(32))
    policy: Mapped[str] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(64))
    # registered | passed | failed | inconclusive | approved | rejected | deployed | rolled_back
    # | superseded (approved, but the champion changed before it could roll out)
    status: Mapped[str] = mapped_column(String(16), default="registered")
    train_seconds: Mapped[float | None] = mapped_column(Float)
    final_loss: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvaluationEpisode(Base):
    """One closed-loop episode of one model on one task and seed: reused across pairings."""

    __tablename__ = "evaluation_episodes"
    __table_args__ = (UniqueConstraint("model_version", "task", "seed", "suite"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    model_version: Mapped[str] = mapped_column(String(32), index=True)
    task: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int]
    # Identifies the evaluation protocol (max steps, seed set); results are comparable within one.
    suite: Mapped[str] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)
    steps: Mapped[int]
    final_reward: Mapped[float] = mapped_column(Float)


class Evaluation(Base):
    """A candidate against the champion on one task, paired on the same seeds."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("candidate_id", "task", "suite"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    candidate_id: Mapped[str] = mapped_column(ForeignKey("candidates.id"), index=True)
    champion_version: Mapped[str | None] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(64))
    suite: Mapped[str] = mapped_column(String(64))
    n: Mapped[int]
    candidate_successes: Mapped[int]
    champion_successes: Mapped[int | None]
    # Discordant pairs: candidate succeeded where the champion failed, and the reverse.
    candidate_only: Mapped[int] = mapped_column(default=0)
    champion_only: Mapped[int] = mapped_column(default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Decision(Base):
    """A gate verdict or a human's (or demo mode's) approval or rejection."""

    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    candidate_id: Mapped[str] = mapped_column(ForeignKey("candidates.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # gate | approval | comment
    # gate: pass | fail | inconclusive; approval: approved | rejected; comment: comment
    verdict: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Rollout(Base):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    candidate_id: Mapped[str] = mapped_column(ForeignKey("candidates.id"), index=True)
    from_version: Mapped[str | None] = mapped_column(String(32))
    to_version: Mapped[str] = mapped_column(String(32))
    # in_progress | paused (for a fleet manager) | completed | halted (by hand or a
    # guardrail) | rolled_back (by the controller)
    state: Mapped[str] = mapped_column(String(16), default="in_progress")
    # [{"name": "canary", "share": 0.1, "robots": [...], "outcome": ...}, ...]
    stages: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    current_stage: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class Heartbeat(Base):
    """A robot's report: what it runs and what happened since its previous heartbeat."""

    __tablename__ = "heartbeats"
    # A robot's retry of a heartbeat carries the same id and is counted once.
    __table_args__ = (
        Index("ix_heartbeats_robot_id_heartbeat_id", "robot_id", "heartbeat_id", unique=True),
        # The plausibility check reads a robot's latest heartbeat time on every heartbeat.
        Index("ix_heartbeats_robot_id_at", "robot_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    robot_id: Mapped[str] = mapped_column(ForeignKey("robots.id"), index=True)
    # The idempotency key the robot chose (a UUID); None for heartbeats stored before 0006.
    heartbeat_id: Mapped[str | None] = mapped_column(String(36))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    policy_version: Mapped[str | None] = mapped_column(String(32))
    # Counts since the previous heartbeat.
    episodes: Mapped[int] = mapped_column(default=0)
    failures: Mapped[int] = mapped_column(default=0)
    interventions: Mapped[int] = mapped_column(default=0)
    # Seconds the robot worked (episode time), the exposure behind per-robot-hour rates.
    active_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # Guardrails outside the statistics: any of these on a candidate robot halts its rollout.
    safety_events: Mapped[int] = mapped_column(default=0, server_default="0")
    emergency_stop: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Champion(Base):
    """The one row saying which version is champion; changed only by compare-and-set."""

    __tablename__ = "champion"

    id: Mapped[int] = mapped_column(primary_key=True)  # always 1 (created by the migration)
    version: Mapped[str | None] = mapped_column(String(32))
    # Bumped by every change: a writer that read generation g may only write g + 1.
    generation: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime | None]


class Promotion(Base):
    """The promotion ledger: every change of champion, in order."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    generation: Mapped[int] = mapped_column(unique=True)
    candidate_id: Mapped[str | None] = mapped_column(ForeignKey("candidates.id"))
    from_version: Mapped[str | None] = mapped_column(String(32))
    to_version: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # promote | rollback
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class NightlyRun(Base):
    """One night of the loop: which outputs each stage produced, so a re-run resumes."""

    __tablename__ = "nightly_runs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    ingest_run_id: Mapped[str | None] = mapped_column(ForeignKey("ingest_runs.id"))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    candidate_id: Mapped[str | None] = mapped_column(ForeignKey("candidates.id"))
    champion_before: Mapped[str | None] = mapped_column(String(32))
    champion_after: Mapped[str | None] = mapped_column(String(32))
    # running | completed | failed | abandoned (its process died; a later run took over)
    state: Mapped[str] = mapped_column(String(16), default="running")
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Who runs it: a running night on this host whose process is gone, or whose lease ran
    # out, no longer blocks the next one (see services/nights.py).
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    lease_until: Mapped[datetime | None]


class ShadowRun(Base):
    """A candidate run as a shadow beside the champion on the fleet's observations.

    While one is running the policy server (and the simulated fleet's shift) gives the
    candidate every observation a robot sends, off the executed path, and logs its actions
    beside the ones served (``services/shadow``). At most one runs at a time.
    """

    __tablename__ = "shadow_runs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    candidate_id: Mapped[str] = mapped_column(ForeignKey("candidates.id"), index=True)
    # The candidate's model version (the shadow) and the champion it shadows.
    version: Mapped[str] = mapped_column(String(32), index=True)
    champion_version: Mapped[str | None] = mapped_column(String(32))
    # running | ended
    state: Mapped[str] = mapped_column(String(16), default="running")
    started_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(Text)


class FieldGateThresholds(Base):
    """One version of the thresholds a fleet manager set for judging on field evidence.

    The field gate uses the newest version set before the night began; without one, a
    candidate judged on field evidence is inconclusive and goes to a fleet manager.
    """

    __tablename__ = "field_gate_thresholds"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    thresholds: Mapped[dict[str, Any]] = mapped_column(default=dict)
    set_by: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    reason: Mapped[str | None] = mapped_column(Text)


class AuditEvent(Base):
    """Every state change: who, what, when, why, before and after."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(80))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)


class NotificationDelivery(Base):
    """The notification outbox: one row per notification owed to the webhook, and how its
    delivery stands (services/notify)."""

    __tablename__ = "notification_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    # What it tells of, e.g. "audit:42" or "ingest-run:<id>": the same event is owed once.
    key: Mapped[str] = mapped_column(String(120), unique=True)
    # approval-waiting | gate-verdict | rollback | halt | pause | quarantine-spike
    event: Mapped[str] = mapped_column(String(32))
    # The notification as services/notify/events.py builds it; shaped for the receiver on send.
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending | delivered | failed (gave up after FLYWHEEL_NOTIFY_MAX_ATTEMPTS)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    # Not tried again before this (the backoff); also a sender's claim while it posts.
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class NotificationCursor(Base):
    """How far the notifier has read the audit log and the ingest runs (one row, id 1)."""

    __tablename__ = "notification_cursor"

    id: Mapped[int] = mapped_column(primary_key=True)
    # When notifications were switched on (the first pass): nothing older is told.
    since: Mapped[datetime] = mapped_column(default=utcnow)
    # The newest audit event read; the next pass reads those after it.
    audit_event_id: Mapped[int] = mapped_column(default=0)
    # The newest ingest run's finish read.
    ingest_finished_at: Mapped[datetime | None]
