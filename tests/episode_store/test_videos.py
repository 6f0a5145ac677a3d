"""Camera frames in the episode store: packed per batch into LeRobot v3.0 video files, read
back at their timestamps, cut out on deletion, and crash leftovers repaired."""

from __future__ import annotations

import json

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from services.episode_store import parquet
from services.episode_store.parquet import EpisodeStore
from services.episode_store.videos import VIDEO_PATH, decode_frames
from tests.episode_store.cameras import HEIGHT, HZ, WIDTH, camera_episode, closest, frame

KEY = "observation.images.front"
FIRST = VIDEO_PATH.format(video_key=KEY, chunk_index=0, file_index=0)
# How far (mean absolute difference, 0-255) a decoded frame may be from the picture it shows:
# AV1 at CRF 30 on these flat colours stays well under it, and other steps' or episodes'
# pictures are far over it.
TOLERANCE = 12


def _batch(store, spool, seeds_steps, first_index=0, **kwargs):
    episodes = [
        (f"ep-{seed}", first_index + i, camera_episode(seed, steps, spool, **kwargs))
        for i, (seed, steps) in enumerate(seeds_steps)
    ]
    data_file = store.write_batch(episodes)
    store.write_meta()
    return data_file, episodes


def _rows(store) -> dict[str, dict]:
    meta = store.episodes_meta().to_pylist()
    return {row["episode_id"]: row for row in meta}


def _check_frames(store, row, seed, steps, rng, key=KEY, offset=0):
    """Random steps of an episode decode, at from_timestamp + step / fps, to its pictures."""
    path = store.root / VIDEO_PATH.format(
        video_key=key,
        chunk_index=row[f"videos/{key}/chunk_index"],
        file_index=row[f"videos/{key}/file_index"],
    )
    chosen = sorted(rng.choice(steps, size=min(steps, 5), replace=False).tolist())
    start = row[f"videos/{key}/from_timestamp"]
    decoded = decode_frames(path, [start + s / HZ for s in chosen], HZ)
    for step, pixels in zip(chosen, decoded, strict=True):
        expected = frame(seed + offset, step)
        assert pixels.shape == (HEIGHT, WIDTH, 3)
        assert np.abs(pixels.astype(float) - expected).mean() < TOLERANCE, (seed, step)
    assert row[f"videos/{key}/to_timestamp"] == pytest.approx(start + steps / HZ)


def _frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(video=0) if p.dts is not None)


def test_a_batch_packs_its_tracks_into_one_video_file_lerobot_reads(tmp_path):
    store, rng = EpisodeStore(tmp_path / "store"), np.random.default_rng(0)
    _, episodes = _batch(store, tmp_path, [(1, 12), (2, 7), (3, 15)])

    assert store.video_files() == {FIRST}
    assert _frame_count(store.root / FIRST) == 34
    rows = _rows(store)
    assert [rows[f"ep-{s}"][f"videos/{KEY}/from_timestamp"] for s in (1, 2, 3)] == pytest.approx(
        [0, 1.2, 1.9]
    )
    for seed, steps in ((1, 12), (2, 7), (3, 15)):
        _check_frames(store, rows[f"ep-{seed}"], seed, steps, rng)
    # The store packed the tracks; they are still the ingest's to discard.
    assert all(raw.cameras["front"].path.exists() for _, _, raw in episodes)

    info = store.info()
    assert info["video_path"] == VIDEO_PATH
    feature = info["features"][KEY]
    assert feature["dtype"] == "video" and feature["shape"] == [HEIGHT, WIDTH, 3]
    assert feature["names"] == ["height", "width", "channels"]
    assert feature["info"]["video.codec"] == "h264" and feature["info"]["video.fps"] == HZ
    assert info["video_files_size_in_mb"] > 0
    assert store.cameras() == {KEY: (WIDTH, HEIGHT)}
    stats = json.loads((store.root / "meta/stats.json").read_text())[KEY]
    assert np.asarray(stats["mean"]).shape == (3, 1, 1)
    # Green is 255 on one block of 12 and 0 elsewhere: per channel, mean in 0-1 and max 1.
    assert 0 < stats["mean"][1][0][0] < 0.2 and stats["max"][1][0][0] > 0.95
    # Red is flat per episode (97, 164 and 31 of 255), weighted by the frames sampled.
    assert stats["mean"][0][0][0] == pytest.approx((6 * 97 + 4 * 164 + 8 * 31) / 18 / 255, abs=0.03)
    # The keyframes, all sampled: every other frame, and any an encoder adds at a scene cut.
    packed = store.root / VIDEO_PATH.format(video_key=KEY, chunk_index=0, file_index=0)
    with av.open(str(packed)) as container:
        keyframes = sum(p.is_keyframe for p in container.demux(video=0) if p.dts is not None)
    assert stats["count"] == [keyframes] and keyframes >= 6 + 4 + 8


def test_a_second_batch_gets_its_own_file_and_the_first_is_untouched(tmp_path):
    store, rng = EpisodeStore(tmp_path / "store"), np.random.default_rng(1)
    _batch(store, tmp_path, [(1, 10), (2, 6)])
    before = (store.root / FIRST).read_bytes()
    _batch(store, tmp_path, [(3, 9)], first_index=2)

    second = VIDEO_PATH.format(video_key=KEY, chunk_index=0, file_index=1)
    assert store.video_files() == {FIRST, second}
    assert (store.root / FIRST).read_bytes() == before
    rows = _rows(store)
    assert rows["ep-3"][f"videos/{KEY}/file_index"] == 1
    assert rows["ep-3"][f"videos/{KEY}/from_timestamp"] == 0
    for seed, steps in ((1, 10), (2, 6), (3, 9)):
        _check_frames(store, rows[f"ep-{seed}"], seed, steps, rng)
    assert json.loads((store.root / "meta/stats.json").read_text())[KEY]["count"] == [5 + 3 + 5]


def test_two_cameras_each_get_their_files(tmp_path):
    store, rng = EpisodeStore(tmp_path / "store"), np.random.default_rng(2)
    _batch(store, tmp_path, [(1, 8), (2, 8)], cameras=("front", "wrist"))
    rows = _rows(store)
    wrist = "observation.images.wrist"
    assert store.cameras() == {KEY: (WIDTH, HEIGHT), wrist: (WIDTH, HEIGHT)}
    for seed in (1, 2):
        _check_frames(store, rows[f"ep-{seed}"], seed, 8, rng)
        _check_frames(store, rows[f"ep-{seed}"], seed, 8, rng, key=wrist, offset=100)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"width": 32}, "front 32x48"),
        ({"cameras": ("front", "wrist")}, "front 64x48, wrist 64x48"),
        ({"cameras": ()}, "no cameras"),
    ],
)
def test_an_episode_whose_cameras_differ_from_the_store_is_refused(tmp_path, change, reason):
    store = EpisodeStore(tmp_path / "store")
    _batch(store, tmp_path, [(1, 6)])
    odd = camera_episode(2, 6, tmp_path, **change)
    with pytest.raises(ValueError, match=f"cameras \\({reason}\\) differ"):
        store.write_batch([("ep-2", 1, odd)])
    assert store.video_files() == {FIRST}
    assert len(store.data_files()) == 1


def test_a_track_without_video_is_refused_loudly(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    raw = camera_episode(1, 6, tmp_path)
    raw.cameras["front"].discard()
    with pytest.raises(ValueError, match="camera front has no video"):
        store.write_batch([("ep-1", 0, raw)])
    assert not store.video_files() and not store.data_files()


def test_a_crash_between_video_and_index_leaves_leftovers_repair_removes(tmp_path, monkeypatch):
    store = EpisodeStore(tmp_path / "store")
    _batch(store, tmp_path, [(1, 6)])
    kept = set(store.data_files())

    # A crash after the second batch's video file, before its data file: the video is named by
    # no row of meta/episodes.
    raw = camera_episode(2, 6, tmp_path)
    streams = store._check_cameras([("ep-2", 1, raw)])
    store._write_videos([("ep-2", 1, raw)], streams, [])
    # A batch written whole, whose index rows never committed (the index does not name it).
    store.write_batch([("ep-3", 2, camera_episode(3, 6, tmp_path))])
    assert len(store.video_files()) == 3

    removed = store.repair(kept)

    assert store.video_files() == {FIRST} and store.data_files() == kept
    # The orphan data file (its videos go with it), and the video no episodes file names.
    assert removed == [
        "data/chunk-000/file-001.parquet",
        VIDEO_PATH.format(video_key=KEY, chunk_index=0, file_index=1),
    ]
    assert set(_rows(store)) == {"ep-1"}
    assert store.info()["total_episodes"] == 1


def test_a_failed_batch_write_removes_its_own_video_files(tmp_path, monkeypatch):
    store = EpisodeStore(tmp_path / "store")

    def full_disk(table, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(parquet, "_write_parquet", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.write_batch([("ep-1", 0, camera_episode(1, 6, tmp_path))])
    assert not store.video_files()


def test_dropping_an_episode_cuts_its_frames_out_and_moves_the_others(tmp_path):
    store, rng = EpisodeStore(tmp_path / "store"), np.random.default_rng(3)
    _batch(store, tmp_path, [(1, 10), (2, 8), (3, 12)])

    files = store.drop_episodes({"ep-2"})

    assert FIRST in files
    (video,) = store.video_files()
    assert video != FIRST  # rewritten under a new number, the old file deleted
    assert _frame_count(store.root / video) == 22
    rows = _rows(store)
    assert set(rows) == {"ep-1", "ep-3"}
    assert rows["ep-3"][f"videos/{KEY}/from_timestamp"] == pytest.approx(1.0)
    _check_frames(store, rows["ep-1"], 1, 10, rng)
    _check_frames(store, rows["ep-3"], 3, 12, rng)
    # Every frame left in the file is one of the kept episodes': the deleted ones are gone.
    pictures = {(s, i): frame(s, i) for s in (1, 2, 3) for i in range(12)}
    with av.open(str(store.root / video)) as container:
        shown = {closest(f.to_ndarray(format="rgb24"), pictures)[0] for f in container.decode()}
    assert shown == {1, 3}
    stats = json.loads((store.root / "meta/stats.json").read_text())[KEY]
    assert stats["count"] == [5 + 6]


def test_dropping_every_episode_of_a_batch_removes_its_video_files(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    _batch(store, tmp_path, [(1, 6), (2, 6)])
    _batch(store, tmp_path, [(3, 6)], first_index=2)
    store.drop_episodes({"ep-1", "ep-2"})
    assert store.video_files() == {VIDEO_PATH.format(video_key=KEY, chunk_index=0, file_index=1)}
    assert store.info()["total_episodes"] == 1


def test_a_crash_before_the_episodes_file_keeps_the_old_video_and_a_rerun_finishes(
    tmp_path, monkeypatch
):
    store, rng = EpisodeStore(tmp_path / "store"), np.random.default_rng(4)
    data_file, _ = _batch(store, tmp_path, [(1, 10), (2, 8)])
    real = parquet.os.replace

    def crash_on_episodes_file(src, dst):
        if "meta/episodes" in str(dst):
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(parquet.os, "replace", crash_on_episodes_file)
    with pytest.raises(OSError):
        store.drop_episodes({"ep-2"})
    monkeypatch.undo()
    # The old video is whole and still named; the new one is a leftover.
    assert FIRST in store.video_files() and len(store.video_files()) == 2
    _check_frames(store, _rows(store)["ep-1"], 1, 10, rng)

    store.repair({data_file})
    store.drop_episodes({"ep-2"})  # what ingest's repair does from the tombstones
    (video,) = store.video_files()
    assert _frame_count(store.root / video) == 10
    _check_frames(store, _rows(store)["ep-1"], 1, 10, rng)
    assert pq.read_table(store.root / data_file).num_rows == 10


def test_repair_removes_the_spool_of_an_ingest_that_died_and_keeps_a_live_one(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    dead = store.root / parquet.SPOOL / "dead"
    dead.mkdir(parents=True)
    (dead / ".owner").touch()  # its ingest's lock went with its process
    (dead / "front-1.mp4").write_bytes(b"a track never packed")
    with store.spool() as live:
        (live / "front-2.mp4").write_bytes(b"a track being read")
        store.repair(set())
        assert not dead.exists()
        assert (live / "front-2.mp4").exists()
    assert not live.exists()


def test_a_track_with_a_frame_count_other_than_the_steps_is_refused(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    raw = camera_episode(1, 8, tmp_path)
    raw.cameras = camera_episode(1, 6, tmp_path).cameras
    with pytest.raises(ValueError, match="camera front has 6 frames for 8 steps"):
        store.write_batch([("ep-1", 0, raw)])
    assert not store.video_files() and not store.data_files()
