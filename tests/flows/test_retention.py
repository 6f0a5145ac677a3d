"""The retention flow runs the service on the run's settings (a no-op while no age is set)."""

from __future__ import annotations

import os

import pytest

from flows.retention import retention
from services.ingest.formats.mcap_writer import write_episode_mcap
from tests.ingest.logs import recording

pytestmark = pytest.mark.slow


def test_the_flow_removes_raw_uploads_past_their_age(settings, prefect_harness, tmp_path):
    logs = tmp_path / "logs"
    write_episode_mcap(recording(), logs / "robot-00" / "0.mcap")
    kept = retention(settings.updated(fleet={"fleet_logs": str(logs)}))
    assert kept.raw_removed == [] and (logs / "robot-00" / "0.mcap").exists()

    os.utime(logs / "robot-00" / "0.mcap", (0, 0))  # uploaded in 1970
    policy = settings.updated(retention={"raw_days": 1}, fleet={"fleet_logs": str(logs)})
    report = retention(policy)
    assert report.raw_removed == [str(logs / "robot-00" / "0.mcap")]
    assert not (logs / "robot-00" / "0.mcap").exists()
