"""The MCAP reader: a contract-conformant upload reads back whole; a broken one says why."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest

from services.episodes.model import LogFormatError
from services.ingest.formats.json_mcap import read_episode_mcap
from services.ingest.formats.mcap_writer import write_episode_mcap
from tests.ingest.logs import recording, step, write_bad_logs, write_raw


def test_an_upload_reads_back_as_written(tmp_path):
    written = recording(n=12)
    path = write_episode_mcap(written, tmp_path / "e.mcap")
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        raw = read_episode_mcap(source)
        assert (raw.robot_id, raw.task, raw.policy_version, raw.kind) == (
            "robot-00",
            "toy-reach",
            "3",
            "deployment",
        )
        assert raw.started_at == datetime(2026, 1, 1, tzinfo=UTC)
        assert (raw.control_hz, raw.state_dim, raw.action_dim, raw.outcome) == (
            10.0,
            4,
            2,
            "success",
        )
        np.testing.assert_allclose(raw.states, written.states.astype(np.float32))
        np.testing.assert_allclose(raw.actions, written.actions.astype(np.float32))
        np.testing.assert_allclose(raw.timestamps, np.arange(12) / 10)
        assert raw.control_source == list(written.control_source)
        assert raw.reasons == list(written.reasons)
        [span] = raw.interventions
        assert (span.start_step, span.end_step, span.kind, span.operator_id, span.reason) == (
            5,
            9,
            "correction",
            "op-7",
            "no progress for 15 steps",
        )


def test_interventions_come_from_who_was_in_control(tmp_path):
    sources = ["policy", "operator", "operator", "policy", "operator"]
    reasons = [None, "drifting", None, None, "stuck"]
    written = recording(n=5, control_source=sources, reasons=reasons, interventions=[])
    raw = read_episode_mcap(write_episode_mcap(written, tmp_path / "e.mcap"))
    assert [
        (s.start_step, s.end_step, s.kind, s.operator_id, s.reason) for s in raw.interventions
    ] == [
        (1, 3, "takeover", "op-1", "drifting"),
        (4, 5, "takeover", "op-1", "stuck"),
    ]
    demo = recording(n=5, kind="demo", policy_version=None, control_source=["operator"] * 5)
    assert read_episode_mcap(write_episode_mcap(demo, tmp_path / "d.mcap")).interventions == []


READER_REASONS = {
    "truncated.mcap",
    "wrong-magic.mcap",
    "empty.mcap",
    "tiny.mcap",
    "not-a-log.mcap",
    "zero-length.mcap",
    "wrong-action-size.mcap",
    "unknown-source.mcap",
    "not-numbers.mcap",
    "no-outcome.mcap",
    "no-header.mcap",
}


def test_each_broken_upload_raises_its_reason(tmp_path):
    good = write_episode_mcap(recording(), tmp_path / "good.mcap").read_bytes()
    expected = write_bad_logs(tmp_path / "bad", good)
    for name in READER_REASONS:
        with pytest.raises(
            LogFormatError, match=expected[name].replace("(", r"\(").replace(")", r"\)")
        ):
            read_episode_mcap(tmp_path / "bad" / name)
    # what only the validation suite can judge still reads
    for name in set(expected) - READER_REASONS:
        assert read_episode_mcap(tmp_path / "bad" / name).steps >= 1


def test_a_corrupt_chunk_and_out_of_order_steps_are_refused(tmp_path):
    good = bytearray(write_episode_mcap(recording(n=200), tmp_path / "good.mcap").read_bytes())
    good[len(good) // 2] ^= 0xFF
    with pytest.raises(LogFormatError, match="corrupt"):
        read_episode_mcap(bytes(good))
    write_raw(tmp_path / "gap.mcap", [step(0), step(2)])
    with pytest.raises(LogFormatError, match="expected step 1, got 2"):
        read_episode_mcap(tmp_path / "gap.mcap")
