"""Episodes imported from LeRobot v3.0 datasets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from services.episodes.model import LogFormatError
from services.ingest.formats.lerobot import read_lerobot
from tests.ingest.datasets import write_lerobot

WHEN = datetime(2026, 3, 1, tzinfo=UTC)


def test_a_lerobot_dataset_imports_and_keeps_its_interventions(tmp_path):
    root = write_lerobot(tmp_path / "towels")
    [(name0, demo), (name1, helped)] = list(read_lerobot(root, {}, WHEN))
    assert (name0, demo.kind, demo.task, demo.robot_id, demo.steps) == (
        "episode_0",
        "demo",
        "fold towel",
        "so100",
        10,
    )
    assert set(demo.control_source) == {"operator"} and demo.outcome == "unknown"
    assert (name1, helped.kind, helped.task, helped.control_hz) == (
        "episode_1",
        "deployment",
        "open drawer",
        30.0,
    )
    assert [(s.start_step, s.end_step) for s in helped.interventions] == [(3, 5)]
    np.testing.assert_allclose(demo.timestamps, np.arange(10) / 30, rtol=1e-6)

    (root / "meta/info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    with pytest.raises(LogFormatError, match="LeRobot dataset v2.1: Flywheel reads v3.0"):
        list(read_lerobot(root, {}, WHEN))
