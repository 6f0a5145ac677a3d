"""Dataset manifests: which episode steps a training run uses, their classes and weights.

A manifest is content-addressed: its id is the SHA-256 of everything in it, so building the
same dataset twice gives the same id and writes nothing new. Each round aggregates every
good episode so far (the replay of earlier data that keeps old tasks from being forgotten),
as Sirius does; ``replay_share`` records how much of it earlier datasets already held.
A set ``replay`` share limits that replay instead: the episodes the champion has not been
trained on, plus just enough of the ones it has (chosen by content hash, so the same ones
every time) to make up that share of the steps; 0 trains on the new episodes alone, which
is how a fleet forgets a task it no longer works. Training reads only manifests
(``load_training_data`` in services/training/data.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import select

from services.config import Settings
from services.curation.weights import (
    SIRIUS_PRE_INTERVENTION_WINDOW,
    STEP_CLASSES,
    WeightingScheme,
    get_scheme,
    label_steps,
)
from services.episode_store.parquet import EpisodeStore
from services.features import CONTROL_SOURCE, EPISODE_ID, FRAME_INDEX
from services.registry.ledger import champion_of
from services.store import session_scope
from services.store.models import Candidate, Dataset, DatasetEpisode, Episode

STEP_CLASS = "step_class"
WEIGHT = "weight"


class NoEpisodesError(RuntimeError):
    """There is nothing to build a dataset from yet."""


@dataclass(frozen=True)
class DatasetSummary:
    id: str
    scheme: str
    n_episodes: int
    n_new_episodes: int
    n_steps: int
    replay_share: float
    class_counts: dict[str, int]
    # False when an identical manifest already existed (nothing was written).
    created: bool


def build_manifest(
    settings: Settings,
    *,
    scheme: str = "sirius",
    window: int = SIRIUS_PRE_INTERVENTION_WINDOW,
    max_steps: int | None = None,
    replay: float | None = None,
) -> DatasetSummary:
    """Mine every good episode into a weighted, content-addressed manifest.

    ``max_steps`` caps the dataset's memory: see ``within_cap``. ``replay`` (in [0, 1))
    limits the share of steps from episodes the champion was already trained on: see
    ``with_replay``; None keeps them all. Held-out episodes (``is_held_out``) never enter a
    dataset.
    """
    if replay is not None and not 0 <= replay < 1:
        raise ValueError(f"replay share must be in [0, 1), got {replay}")
    weighting = get_scheme(scheme)
    holdout = settings.curation.holdout_share
    with session_scope(settings.db_url) as session:
        episodes = [
            e
            for e in session.scalars(
                select(Episode).where(Episode.status == "ok").order_by(Episode.id)
            )
            if not is_held_out(e, holdout)
        ]
        used = set(session.scalars(select(DatasetEpisode.episode_id).distinct()))
        seen = champion_episodes(session) if replay is not None else set()
    if not episodes:
        raise NoEpisodesError("no ingested episodes yet: run `flywheel ingest` first")
    if replay is not None:
        episodes = with_replay(episodes, seen, replay)
        if not episodes:
            raise NoEpisodesError(
                "no episodes the champion has not been trained on, and no replay share to "
                "train on old ones"
            )
    kept = within_cap(episodes, max_steps)
    evicted = len(episodes) - len(kept)
    episodes = sorted(kept, key=lambda e: e.id)

    frames = EpisodeStore(settings.episode_store).read_frames(
        [e.id for e in episodes], data_files={e.id: e.data_file for e in episodes}
    )
    by_episode = {e.id: e for e in episodes}
    frames = frames.sort_values([EPISODE_ID, FRAME_INDEX], kind="stable")
    episode_ids = frames[EPISODE_ID].to_numpy()
    classes = np.empty(len(frames), dtype=object)
    failed = np.zeros(len(frames), dtype=bool)
    step_tasks = np.empty(len(frames), dtype=object)
    # Converted once: a conversion per episode made building quadratic in the fleet's data.
    sources = frames[CONTROL_SOURCE].to_numpy()
    bounds = np.flatnonzero(np.r_[True, episode_ids[1:] != episode_ids[:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        episode = by_episode[episode_ids[start]]
        classes[start:end] = label_steps(episode.kind or "deployment", sources[start:end], window)
        failed[start:end] = episode.outcome != "success"
        step_tasks[start:end] = episode.task
    weights = weights_per_task(weighting, classes, failed, step_tasks)

    table = pa.table(
        {
            EPISODE_ID: pa.array(episode_ids, pa.string()),
            FRAME_INDEX: pa.array(frames[FRAME_INDEX].to_numpy(), pa.int32()),
            STEP_CLASS: pa.array(classes.astype(str), pa.string()).dictionary_encode(),
            WEIGHT: pa.array(weights, pa.float32()),
        }
    )
    class_counts = {c: int((classes == c).sum()) for c in STEP_CLASSES}
    n_steps = len(frames)
    replayed_steps = int(np.isin(episode_ids, list(used)).sum())
    header = {
        "scheme": weighting.name,
        "pre_intervention_window": window,
        "tasks": sorted({e.task for e in episodes}),
        "episodes": [
            {"id": e.id, "task": e.task, "data_file": e.data_file, "outcome": e.outcome}
            for e in episodes
        ],
        "class_counts": class_counts,
        "n_steps": n_steps,
        "max_steps": max_steps,
        "evicted_episodes": evicted,
        "holdout_share": holdout,
    }
    if replay is not None:  # absent when all is replayed: earlier manifests keep their ids
        header["replay"] = replay
    dataset_id = _content_hash(header, table)
    replay_share = replayed_steps / n_steps if n_steps else 0.0
    path = settings.datasets_dir / dataset_id
    created = _write_manifest(path, {"id": dataset_id, **header}, table)

    with session_scope(settings.db_url) as session:
        if session.get(Dataset, dataset_id) is None:
            session.add(
                Dataset(
                    id=dataset_id,
                    scheme=weighting.name,
                    n_episodes=len(episodes),
                    n_steps=n_steps,
                    replay_share=replay_share,
                    class_counts=class_counts,
                    path=str(path),
                )
            )
            session.flush()  # the dataset row before the rows that reference it
            weight_per_episode = (
                table.select([EPISODE_ID, WEIGHT]).group_by(EPISODE_ID).aggregate([(WEIGHT, "sum")])
            )
            session.add_all(
                DatasetEpisode(dataset_id=dataset_id, episode_id=eid, weight_sum=float(w))
                for eid, w in zip(
                    weight_per_episode[EPISODE_ID].to_pylist(),
                    weight_per_episode[f"{WEIGHT}_sum"].to_pylist(),
                    strict=True,
                )
            )
    return DatasetSummary(
        id=dataset_id,
        scheme=weighting.name,
        n_episodes=len(episodes),
        n_new_episodes=sum(e.id not in used for e in episodes),
        n_steps=n_steps,
        replay_share=replay_share,
        class_counts=class_counts,
        created=created,
    )


def weights_per_task(
    weighting: WeightingScheme, classes: np.ndarray, failed: np.ndarray, tasks: np.ndarray
) -> np.ndarray:
    """The scheme's class shares applied within each task; each task keeps the share of the
    loss its kept steps have.

    Applied to the whole multi-task dataset at once, "interventions carry half of the loss"
    hands that half to the task with the most takeovers, and a task the fleet already does
    well (few takeovers, short successful episodes) all but drops out of training and is
    forgotten. With one task this is the scheme's own weighting.
    """
    weights = np.zeros(len(classes), dtype=np.float32)
    for task in dict.fromkeys(tasks):
        mask = tasks == task
        weights[mask] = weighting.weights(classes[mask], failed[mask])
    return weights


def champion_episodes(session) -> set[str]:
    """The episodes the champion was trained on: its dataset and its ancestors' (a model
    fine-tuned from its parent carries what the parent learnt)."""
    seen: set[str] = set()
    version = champion_of(session=session)
    visited: set[str] = set()
    while version is not None and version not in visited:
        visited.add(version)
        candidate = session.scalar(select(Candidate).where(Candidate.model_version == version))
        if candidate is None:
            break
        if candidate.dataset_id is not None:
            seen.update(
                session.scalars(
                    select(DatasetEpisode.episode_id).where(
                        DatasetEpisode.dataset_id == candidate.dataset_id
                    )
                )
            )
        version = candidate.parent_version
    return seen


def with_replay(episodes: list[Episode], seen: set[str], share: float) -> list[Episode]:
    """The unseen episodes, plus seen ones (in content-hash order) until they make up about
    ``share`` of the steps."""
    new = [e for e in episodes if e.id not in seen]
    old = sorted((e for e in episodes if e.id in seen), key=lambda e: e.id)
    new_steps = sum(e.steps or 0 for e in new)
    budget = share / (1 - share) * new_steps
    replayed, total = [], 0
    for episode in old:
        if total + (episode.steps or 0) > budget:
            continue  # a shorter one may still fit
        replayed.append(episode)
        total += episode.steps or 0
    return new + replayed


def within_cap(episodes: list[Episode], max_steps: int | None) -> list[Episode]:
    """The episodes a dataset of at most ``max_steps`` steps keeps.

    Sirius's memory management: when the data outgrows the cap, the deployment episodes
    with the fewest interventions go first (they teach the least; older first among
    equals), and demonstrations are never evicted.
    """
    if max_steps is None or sum(e.steps or 0 for e in episodes) <= max_steps:
        return list(episodes)
    demos = [e for e in episodes if e.kind == "demo"]
    others = sorted(
        (e for e in episodes if e.kind != "demo"),
        key=lambda e: (-e.n_interventions, -(e.started_at.timestamp() if e.started_at else 0)),
    )
    kept, total = list(demos), sum(e.steps or 0 for e in demos)
    for episode in others:  # most-intervened, then newest, first
        if total + (episode.steps or 0) > max_steps:
            continue
        kept.append(episode)
        total += episode.steps or 0
    return kept


def is_held_out(episode: Episode, share: float) -> bool:
    """Whether a deployment episode belongs to the held-out set for offline evaluation.

    Decided by the episode id (a content hash), so an episode is held out on every night
    or never: no model is trained on an episode it is later scored on. Demonstrations are
    never held out: there are few of them and the first policy needs them all.
    """
    if episode.kind != "deployment" or share <= 0:
        return False
    return int(hashlib.sha256(episode.id.encode()).hexdigest()[:8], 16) < share * 16**8


def held_out_episodes(settings: Settings) -> list[Episode]:
    with session_scope(settings.db_url) as session:
        return [
            e
            for e in session.scalars(
                select(Episode).where(Episode.status == "ok").order_by(Episode.id)
            )
            if is_held_out(e, settings.curation.holdout_share)
        ]


def _content_hash(header: dict, table: pa.Table) -> str:
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for name in (EPISODE_ID, FRAME_INDEX, WEIGHT):
        digest.update(name.encode())
        column = table[name].combine_chunks()
        digest.update(
            "\0".join(column.to_pylist()).encode()
            if name == EPISODE_ID
            else column.to_numpy(zero_copy_only=False).tobytes()
        )
    digest.update("\0".join(table[STEP_CLASS].cast(pa.string()).to_pylist()).encode())
    return digest.hexdigest()[:16]


def _write_manifest(path: Path, header: dict, table: pa.Table) -> bool:
    """Write the manifest folder atomically; False if it is already there."""
    if (path / "manifest.json").exists():
        return False
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(table, tmp / "manifest.parquet")
    (tmp / "manifest.json").write_text(json.dumps(header, indent=1, sort_keys=True))
    try:
        os.replace(tmp, path)
    except OSError:  # a concurrent build of the same content won the rename
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def read_manifest(settings: Settings, dataset_id: str) -> tuple[dict, pa.Table]:
    path = settings.datasets_dir / dataset_id
    if not (path / "manifest.json").exists():
        raise FileNotFoundError(f"dataset {dataset_id} has no manifest under {path}")
    header = json.loads((path / "manifest.json").read_text())
    return header, pq.read_table(path / "manifest.parquet")
