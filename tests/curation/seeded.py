"""A small home for the deletion and retention tests: two robots' episodes in one shared
Parquet file, a quarantined log, a dataset, and models trained on it (one the champion)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.config import Settings
from services.curation.manifest import build_manifest
from services.episode_store.index import list_episodes
from services.episode_store.parquet import EpisodeStore
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.registry.ledger import promote
from services.store import session_scope
from services.store.models import Candidate, Dataset
from tests.ingest.logs import recording

EARLY = datetime(2026, 1, 1, tzinfo=UTC)
LATE = datetime(2026, 1, 10, tzinfo=UTC)


@dataclass
class Home:
    logs: Path
    dataset: str
    # episode id -> (robot, started_at)
    episodes: dict[str, tuple[str, datetime]]
    quarantined: list[str]

    def of_robot(self, robot: str) -> set[str]:
        return {e for e, (r, _) in self.episodes.items() if r == robot}


def write_logs(logs: Path) -> None:
    """robot-00 recorded two episodes early, robot-01 two late; one log is quarantined."""
    for n, (robot, at) in enumerate(
        [("robot-00", EARLY), ("robot-00", EARLY), ("robot-01", LATE), ("robot-01", LATE)]
    ):
        write_episode_mcap(
            recording(n=20 + n, robot_id=robot, started_at=at), logs / robot / f"{n}.mcap"
        )
    good = (logs / "robot-00" / "0.mcap").read_bytes()
    (logs / "bad").mkdir()
    (logs / "bad" / "truncated.mcap").write_bytes(good[: len(good) * 2 // 3])


def seed(settings: Settings, logs: Path, *, train: bool = True) -> Home:
    write_logs(logs)
    summary = ingest_logs(settings, source=str(logs))
    assert summary.ingested == 4
    dataset = build_manifest(settings, scheme="uniform").id
    if train:
        register(settings, "cand-1", "1", dataset, parent=None, champion=True)
        with session_scope(settings.db_url) as session:  # a later model's own dataset
            session.add(Dataset(id="later", scheme="uniform", n_episodes=0, n_steps=0, path="-"))
        register(settings, "cand-2", "2", "later", parent="1")
    episodes = {e.id: (e.robot_id, e.started_at) for e in list_episodes(settings, status="ok")}
    quarantined = [e.id for e in list_episodes(settings, status="quarantined")]
    return Home(logs, dataset, episodes, quarantined)


def register(settings, candidate_id, version, dataset, *, parent, champion=False) -> None:
    with session_scope(settings.db_url) as session:
        session.add(
            Candidate(
                id=candidate_id,
                model_name="flywheel-policy",
                model_version=version,
                dataset_id=dataset,
                parent_version=parent,
                policy="mlp",
                status="deployed" if champion else "registered",
            )
        )
        session.flush()
        if champion:
            promote(
                session=session,
                expected=None,
                new=version,
                candidate_id=candidate_id,
                actor="test",
                reason="first champion",
            )


def frames_by_episode(settings: Settings) -> dict[str, list]:
    """Every stored frame, read back from the Parquet files, grouped by episode id."""
    store = EpisodeStore(settings.episode_store)
    frames = store.read_frames(sorted(store.episodes_meta()["episode_id"].to_pylist()))
    return {
        episode_id: group.drop(columns=["task"])
        .map(lambda v: v.tolist() if hasattr(v, "tolist") else v)
        .to_dict("records")
        for episode_id, group in frames.groupby("episode_id")
    }


def store_files(settings: Settings) -> dict[Path, bytes]:
    root = settings.episode_store
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
