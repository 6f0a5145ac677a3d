"""A deletion cut short loses nothing: the shared file is whole (old or new), and the next
writer finishes the job from the tombstones."""

from __future__ import annotations

import os

import pytest

from services.curation.deletion import delete_episodes
from services.episode_store import parquet
from services.episode_store.index import repair
from services.episode_store.parquet import EpisodeStore
from tests.curation.seeded import frames_by_episode, seed

pytestmark = pytest.mark.fault

DATA_FILE = "data/chunk-000/file-000.parquet"


def _failing_rename(monkeypatch, name_part: str) -> None:
    """The rename over ``name_part`` fails, as on a full disk or a crash at that moment."""
    real = os.replace

    def replace(src, dst):
        if name_part in str(dst):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(parquet.os, "replace", replace)


@pytest.mark.parametrize("cut", ["data/chunk-000", "meta/episodes/chunk-000"])
def test_a_failed_rewrite_keeps_every_frame_and_a_rerun_finishes(
    settings, tmp_path, monkeypatch, cut
):
    home = seed(settings, tmp_path / "logs", train=False)
    before = frames_by_episode(settings)
    old_bytes = (settings.episode_store / DATA_FILE).read_bytes()
    gone = home.of_robot("robot-00")
    _failing_rename(monkeypatch, cut)

    with pytest.raises(OSError, match="No space left"):
        delete_episodes(settings, robots=["robot-00"], reason="asked", actor="fatima")

    if cut == "data/chunk-000":  # the data file was never replaced: the old one, whole
        assert (settings.episode_store / DATA_FILE).read_bytes() == old_bytes
    kept = frames_by_episode(settings)
    for episode_id in home.of_robot("robot-01"):
        assert kept[episode_id] == before[episode_id]
    assert list(settings.episode_store.rglob(".*.partial"))  # the new file, left for repair

    monkeypatch.undo()
    repair(settings.db_url, EpisodeStore(settings.episode_store))  # what the next ingest does

    after = frames_by_episode(settings)
    assert set(after) == home.of_robot("robot-01")
    assert all(after[e] == before[e] for e in after)
    assert not list(settings.episode_store.rglob(".*.partial"))
    assert gone.isdisjoint(
        EpisodeStore(settings.episode_store).episodes_meta()["episode_id"].to_pylist()
    )


def test_running_the_same_deletion_again_finishes_it(settings, tmp_path, monkeypatch):
    home = seed(settings, tmp_path / "logs", train=False)
    _failing_rename(monkeypatch, "data/chunk-000")
    with pytest.raises(OSError):
        delete_episodes(settings, robots=["robot-00"], reason="asked", actor="fatima")
    monkeypatch.undo()

    again = delete_episodes(
        settings, ids=sorted(home.of_robot("robot-00")), reason="asked", actor="fatima"
    )

    assert sorted(again.already_deleted) == sorted(home.of_robot("robot-00"))
    assert again.data_files == [DATA_FILE]
    assert set(frames_by_episode(settings)) == home.of_robot("robot-01")
