"""The episode store exported as a LeRobot v3.0 dataset, and imported back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from services.episode_store.export import export_lerobot
from services.episode_store.index import list_episodes
from services.episode_store.parquet import EpisodeStore
from services.ingest.batch import ingest_logs
from services.ingest.formats.lerobot import read_lerobot
from services.ingest.formats.mcap_writer import write_episode_mcap
from tests.ingest.datasets import write_robomimic
from tests.ingest.logs import recording

WHEN = datetime(2026, 3, 1, tzinfo=UTC)


def test_imported_demos_are_ingested_once_and_export_as_a_dataset_that_imports_back(
    settings, tmp_path
):
    logs = tmp_path / "logs"
    write_robomimic(logs / "demos/lift.hdf5", lengths=(12, 9))
    write_episode_mcap(recording(n=15, state_dim=5, action_dim=7), logs / "fleet/e1.mcap")
    mapping_dims = ingest_logs(settings, source=str(logs))
    assert (mapping_dims.ingested, mapping_dims.quarantined) == (3, 0)
    rows = {e.source_uri.rsplit("/", 1)[-1]: e for e in list_episodes(settings)}
    assert set(rows) == {"lift.hdf5#demo_0", "lift.hdf5#demo_1", "e1.mcap"}
    assert rows["lift.hdf5#demo_0"].source_format == "robomimic"
    assert (rows["lift.hdf5#demo_0"].kind, rows["lift.hdf5#demo_0"].outcome) == ("demo", "success")

    # a re-run decodes the demos again but adds nothing; a new demo in the file adds itself
    assert ingest_logs(settings, source=str(logs)).ingested == 0
    write_robomimic(logs / "demos/lift.hdf5", lengths=(12, 9, 4))
    again = ingest_logs(settings, source=str(logs))
    assert (again.ingested, len(list_episodes(settings))) == (1, 4)

    exported = export_lerobot(settings, tmp_path / "export")
    assert (exported.episodes, exported.frames) == (4, 12 + 9 + 4 + 15)
    info = json.loads((tmp_path / "export/meta/info.json").read_text())
    assert (info["codebase_version"], info["total_episodes"], info["total_frames"]) == (
        "v3.0",
        4,
        40,
    )
    back = dict(read_lerobot(tmp_path / "export", {}, WHEN))
    store = EpisodeStore(settings.episode_store)
    originals = store.read_frames([e.id for e in list_episodes(settings)])
    fleet = next(e for e in back.values() if e.kind == "deployment")
    assert (fleet.steps, fleet.task, fleet.robot_id, fleet.policy_version) == (
        15,
        "toy-reach",
        "robot-00",
        "3",
    )
    assert fleet.outcome == "success" and [
        (s.start_step, s.end_step) for s in fleet.interventions
    ] == [(5, 9)]
    assert sum(e.steps for e in back.values()) == len(originals)

    demos_only = export_lerobot(settings, tmp_path / "demos", kinds=["demo"])
    assert demos_only.episodes == 3
    with pytest.raises(FileExistsError):
        export_lerobot(settings, tmp_path / "demos")
    with pytest.raises(LookupError, match="no ingested episodes match"):
        export_lerobot(settings, tmp_path / "none", tasks=["juggle"])
    assert not (tmp_path / "none").exists()
