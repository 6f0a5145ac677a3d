"""Ingest: good uploads become indexed episodes, every kind of bad one is quarantined."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from mcap.writer import Writer
from sqlalchemy import select

from services.fleetlogs import contract
from services.fleetlogs.episode_store import EpisodeStore
from services.fleetlogs.ingest import ingest_logs, list_episodes
from services.fleetlogs.mcap_writer import EpisodeRecording, InterventionSpan, write_episode_mcap
from services.store import session_scope
from services.store.models import Episode, Intervention


def recording(n=20, state_dim=4, action_dim=2, **changes) -> EpisodeRecording:
    rng = np.random.default_rng(n + state_dim)
    sources = ["policy"] * n
    sources[5:9] = ["operator"] * 4
    reasons = [None] * n
    reasons[5] = "no progress for 15 steps"
    fields = dict(
        episode_uuid=str(uuid.uuid4()),
        robot_id="robot-00",
        task="toy-reach",
        policy_version="3",
        kind="deployment",
        operator_id="op-1",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        control_hz=10.0,
        states=rng.normal(size=(n, state_dim)),
        actions=rng.uniform(-1, 1, size=(n, action_dim)),
        control_source=sources,
        reasons=reasons,
        outcome="success",
        interventions=[InterventionSpan(5, 9, operator_id="op-1", reason=reasons[5])],
    )
    fields.update(changes)
    return EpisodeRecording(**fields)


def write_raw_steps(path: Path, steps: list[dict], header: dict | None = None) -> None:
    """An MCAP file with hand-written step messages (for what the writer refuses to make)."""
    with open(path, "wb") as f:
        writer = Writer(f)
        writer.start()
        schema = writer.register_schema(name="s", encoding="jsonschema", data=b"{}")
        channels = {
            t: writer.register_channel(topic=t, message_encoding="json", schema_id=schema)
            for t in (contract.EPISODE_TOPIC, contract.STEP_TOPIC, contract.OUTCOME_TOPIC)
        }
        base = header or {
            "episode_uuid": "x",
            "robot_id": "r",
            "task": "toy-reach",
            "kind": "deployment",
            "started_at": "2026-01-01T00:00:00+00:00",
            "control_hz": 10.0,
            "state_dim": 4,
            "action_dim": 2,
        }
        writer.add_message(channels[contract.EPISODE_TOPIC], 0, json.dumps(base).encode(), 0)
        for i, step in enumerate(steps):
            writer.add_message(
                channels[contract.STEP_TOPIC], i + 1, json.dumps(step).encode(), i + 1
            )
        writer.add_message(
            channels[contract.OUTCOME_TOPIC],
            999,
            json.dumps({"outcome": "failure", "steps": len(steps)}).encode(),
            999,
        )
        writer.finish()


def _step(i, t=None, state=None, action=None, source="policy"):
    return {
        "step": i,
        "t": i * 0.1 if t is None else t,
        "state": state or [0.0, 1.0, 2.0, 3.0],
        "action": action or [0.1, 0.2],
        "control_source": source,
        "reason": None,
    }


@pytest.fixture
def fleet_dir(tmp_path) -> Path:
    logs = tmp_path / "logs"
    write_episode_mcap(recording(), logs / "robot-00" / "good-1.mcap")
    write_episode_mcap(recording(n=30), logs / "robot-00" / "good-2.mcap")
    good = (logs / "robot-00" / "good-1.mcap").read_bytes()
    bad = logs / "bad"
    bad.mkdir()
    (bad / "truncated.mcap").write_bytes(good[: len(good) * 2 // 3])
    (bad / "wrong-magic.mcap").write_bytes(b"\x89MCAX0\r\n" + good[8:])
    (bad / "empty.mcap").write_bytes(b"")
    (bad / "not-a-log.mcap").write_text("this is a shopping list, not a robot log\n")
    write_raw_steps(bad / "zero-length.mcap", [])
    write_raw_steps(
        bad / "nan.mcap",
        [
            _step(0),
            _step(1, state=[0.0, float("nan"), 1.0, 2.0]),
            _step(2, action=[float("inf"), 0.0]),
        ],
    )
    write_raw_steps(
        bad / "time-backwards.mcap", [_step(0, t=0.0), _step(1, t=0.2), _step(2, t=0.1)]
    )
    write_raw_steps(bad / "absurd-time.mcap", [_step(0, t=0.0), _step(1, t=9e9)])
    write_raw_steps(bad / "wrong-action-size.mcap", [_step(0), _step(1, action=[0.1, 0.2, 0.3])])
    write_raw_steps(bad / "unknown-source.mcap", [_step(0), _step(1, source="ghost")])
    write_episode_mcap(recording(action_dim=3), bad / "other-embodiment.mcap")
    write_raw_steps(bad / "no-header.mcap", [_step(0)], header={"unexpected": True})
    (logs / ".partial-upload.mcap").write_bytes(good[:100])  # an upload still in flight
    return logs


EXPECTED_REASONS = {
    "truncated.mcap": "truncated or corrupt",
    "wrong-magic.mcap": "not an MCAP file",
    "empty.mcap": "empty file",
    "not-a-log.mcap": "not an MCAP file",
    "zero-length.mcap": "zero-length episode",
    "nan.mcap": "NaN or inf",
    "time-backwards.mcap": "timestamps not strictly increasing",
    "absurd-time.mcap": "gap over 10 s",
    "wrong-action-size.mcap": "action has 3 values",
    "unknown-source.mcap": "unknown control source",
    "other-embodiment.mcap": "action size differs from the fleet's 2",
    "no-header.mcap": "header is incomplete",
}


def test_every_bad_file_is_quarantined_with_its_reason_and_good_ones_ingested(
    store_settings, fleet_dir
):
    before = {p: p.read_bytes() for p in fleet_dir.rglob("*") if p.is_file()}
    summary = ingest_logs(store_settings, source=str(fleet_dir))

    assert summary.ingested == 2 and summary.quarantined == len(EXPECTED_REASONS)
    reasons = {Path(path).name: reason for path, reason in summary.quarantined_files}
    for name, expected in EXPECTED_REASONS.items():
        assert expected in reasons[name], (name, reasons[name])
    quarantined = list_episodes(store_settings, status="quarantined")
    assert {Path(e.source_uri).name for e in quarantined} == set(EXPECTED_REASONS)
    assert all(e.reason for e in quarantined)
    # sources are never modified or deleted, partial uploads are left alone
    assert before == {p: p.read_bytes() for p in fleet_dir.rglob("*") if p.is_file()}

    again = ingest_logs(store_settings, source=str(fleet_dir))
    assert (again.ingested, again.quarantined, again.skipped) == (0, 0, 2 + len(EXPECTED_REASONS))


def test_ingested_episodes_are_indexed_with_interventions_and_frames(settings, fleet_dir):
    summary = ingest_logs(settings, source=str(fleet_dir))
    with session_scope(settings.db_url) as session:
        episodes = session.scalars(select(Episode).where(Episode.status == "ok")).all()
        assert {e.steps for e in episodes} == {20, 30}
        assert {e.episode_index for e in episodes} == {0, 1}
        interventions = session.scalars(select(Intervention)).all()
        assert [(i.start_step, i.end_step, i.reason) for i in interventions] == [
            (5, 9, "no progress for 15 steps")
        ] * 2
    store = EpisodeStore(settings.episode_store)
    frames = store.read_frames(
        summary.episode_ids, data_files={e.id: e.data_file for e in episodes}
    )
    assert len(frames) == 50 and frames["intervention"].sum() == 8
    assert set(frames["task"]) == {"toy-reach"}
    info = json.loads((settings.episode_store / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == 50
    assert info["features"]["observation.state"]["shape"] == [4]
    tasks = pq.read_table(settings.episode_store / "meta/tasks.parquet").to_pylist()
    assert tasks == [{"task_index": 0, "task": "toy-reach"}]
    meta = pq.read_table(next((settings.episode_store / "meta/episodes").rglob("*.parquet")))
    assert sorted(meta["length"].to_pylist()) == [20, 30]
    stats = json.loads((settings.episode_store / "meta/stats.json").read_text())
    assert stats["action"]["count"] == [50]


def test_a_failed_index_write_leaves_no_orphan_parquet(settings, fleet_dir, monkeypatch):
    import services.fleetlogs.ingest as ingest

    def broken_row(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(ingest, "_episode_row", broken_row)
    with pytest.raises(RuntimeError):
        ingest_logs(settings, source=str(fleet_dir))
    assert EpisodeStore(settings.episode_store).data_files() == set()
    monkeypatch.undo()
    assert ingest_logs(settings, source=str(fleet_dir)).ingested == 2


def test_a_crash_leftover_data_file_is_removed_on_the_next_run(settings, fleet_dir):
    ingest_logs(settings, source=str(fleet_dir))
    store = EpisodeStore(settings.episode_store)
    leftover = store.root / "data/chunk-000/file-007.parquet"
    leftover.write_bytes((store.root / "data/chunk-000/file-000.parquet").read_bytes())
    ingest_logs(settings, source=str(fleet_dir))
    assert not leftover.exists() and len(store.data_files()) == 1
