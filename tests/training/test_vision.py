"""Vision runs on a store that ingest wrote: each step's frames are located in the store's
videos, decoded in DataLoader workers while training, and a Ray Train run killed mid-way ends
where an uninterrupted one does; held-out takeovers are scored with their own frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import make_policy
from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.images import CameraInput, ImageStats
from policies.mlp import MLPConfig
from policies.normalization import NormalizationStats
from services.curation.manifest import build_manifest, held_out_episodes
from services.episode_store.camera_index import MissingCamera
from services.episode_store.parquet import EpisodeStore
from services.episode_store.videos import VIDEO_PATH, decode_frames
from services.evaluation.offline import action_errors
from services.features import CONTROL_OPERATOR, CONTROL_SOURCE, OBSERVATION_STATE
from services.ingest.batch import ingest_logs
from services.ingest.formats.mcap_writer import write_episode_mcap
from services.training.config import TrainConfig
from services.training.data import load_training_data
from services.training.job import fit_candidate
from services.training.loop import Run, WorkerFault
from tests.conftest import _settings
from tests.ingest.cameras import frame, h264
from tests.ingest.logs import recording

KEY = "observation.images.front"
STEPS = 24
CONFIG = TrainConfig(
    steps=12,
    batch_size=16,
    checkpoint_every=4,
    log_every=4,
    hidden=(16,),
    cameras=("front",),
    image_px=16,
    augment_shift=2,
    loader_workers=2,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two demos and two deployments with a front camera (robot r, step i shows
    ``frame(7 r + i)``), ingested; the deployments are held out. Returns the settings."""
    folder = tmp_path_factory.mktemp("vision")
    with pytest.MonkeyPatch.context() as monkeypatch:
        settings = _settings(folder, monkeypatch)
        settings = settings.updated(curation={"holdout_share": 0.99})
        for robot, kind in enumerate(["demo", "demo", "deployment", "deployment"]):
            pixels = [frame(7 * robot + i) for i in range(STEPS)]
            front = list(zip(np.arange(STEPS) / 10.0, h264(pixels, fps=10.0, gop=4), strict=True))
            takeovers = {"interventions": []} if kind == "demo" else {}
            episode = recording(
                n=STEPS,
                robot_id=f"robot-{robot:02d}",
                kind=kind,
                episode_uuid=f"vision-{robot}",
                **takeovers,
            )
            write_episode_mcap(episode, folder / "logs" / f"{robot}.mcap", cameras={"front": front})
        assert ingest_logs(settings, source=str(folder / "logs")).ingested == 4
        assert len(held_out_episodes(settings)) == 2
        yield settings


@pytest.fixture(scope="module")
def data(store):
    return load_training_data(store, build_manifest(store).id, ("front",))


def test_each_row_is_located_at_its_frame_with_the_stores_image_statistics(store, data):
    frames = data.frames
    assert len(data) == 2 * STEPS and frames.cameras == ("front",) and frames.fps["front"] == 10
    # Row k's time in its video file decodes to the picture its step showed.
    rows = np.array([0, 5, STEPS + 3, 2 * STEPS - 1])
    ((chunk, file),) = {tuple(f) for f in frames.files["front"][rows]}
    path = EpisodeStore(store.episode_store).root / VIDEO_PATH.format(
        video_key=KEY, chunk_index=chunk, file_index=file
    )
    decoded = decode_frames(path, frames.times["front"][rows].tolist(), 10.0)
    robots = {0: 0, 1: 1}  # the two demos are robots 0 and 1, ingested first
    for row, pixels in zip(rows, decoded, strict=True):
        episode, step = int(frames.episode_index[row]), int(frames.frame_index[row])
        expected = frame(7 * robots[episode] + step).astype(float)
        assert np.abs(pixels - expected).mean() < 12, (row, episode, step)
    # Statistics pooled from the store's per-episode ones: 0-1 scale, red brighter than green.
    assert frames.mean["front"].shape == (3,) and frames.std["front"].min() > 0
    assert 0.2 < frames.mean["front"][1] < 0.3 < frames.mean["front"][0]


def test_a_camera_the_episodes_lack_is_refused_by_name(store):
    dataset = build_manifest(store).id
    with pytest.raises(MissingCamera, match=r"2 of 2 episodes have no camera 'wrist'.*: front"):
        load_training_data(store, dataset, ("front", "wrist"))
    with pytest.raises(ValueError, match="cameras"):
        TrainConfig(cameras=("front", "front"))


@pytest.mark.slow
@pytest.mark.fault
def test_a_killed_vision_worker_resumes_and_ends_where_an_uninterrupted_run_does(
    store, data, tmp_path
):
    # The uninterrupted run, in this process with one thread as a Ray worker has.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clean = Run.start(CONFIG, data, parent=None)
        clean.fit(lambda run: None)
    finally:
        torch.set_num_threads(threads)
    marker = tmp_path / "killed"
    killed = fit_candidate(
        store,
        data,
        candidate_id="vision-killed",
        parent_checkpoint=None,
        config=CONFIG,
        fault=WorkerFault(at_step=6, marker=str(marker)),
    )
    assert marker.exists()  # the worker died at step 6, after the checkpoint of step 4
    np.testing.assert_allclose(
        [loss for _, loss in killed.losses], [loss for _, loss in clean.losses], rtol=1e-6
    )
    policy = load_checkpoint(killed.checkpoint_dir)
    for key, value in clean.model.state_dict().items():
        np.testing.assert_allclose(policy.model.state_dict()[key].numpy(), value.numpy(), rtol=1e-6)
    # The checkpoint names its camera and carries the run's image statistics.
    assert policy.config.cameras == (CameraInput("front", 16, 16, "h264"),)
    np.testing.assert_allclose(policy.stats.images["front"].mean, data.frames.mean["front"])


def test_held_out_takeovers_are_scored_on_their_own_frames(store, tmp_path):
    config = MLPConfig(
        state_dim=4,
        action_dim=2,
        tasks=("toy-reach",),
        hidden=(8,),
        cameras=(CameraInput("front", 32, 32, "h264"),),
    )
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    stats = NormalizationStats.from_arrays(
        rng.normal(size=(10, 4)).astype(np.float32),
        rng.normal(size=(10, 2)).astype(np.float32),
        images={"front": ImageStats(mean=np.full(3, 0.5), std=np.full(3, 0.2))},
    )
    model = make_policy(config)
    with torch.no_grad():  # peaked keypoints: the untrained policy's actions follow the pictures
        for name, weights in model.named_parameters():
            if "keypoints" in name:
                weights.mul_(30)
    checkpoint = save_checkpoint(tmp_path / "vision", model, config, stats, {})
    found = action_errors({"vision": checkpoint}, store)["toy-reach"]
    # By hand: the operator steps of the held-out episodes, with their frames decoded from
    # the store's video at from_timestamp + frame_index / fps.
    held_out = held_out_episodes(store)
    episode_store = EpisodeStore(store.episode_store)
    steps = episode_store.read_frames(
        [e.id for e in held_out], data_files={e.id: e.data_file for e in held_out}
    )
    steps = steps[steps[CONTROL_SOURCE] == CONTROL_OPERATOR]
    meta = {row["episode_id"]: row for row in episode_store.episodes_meta().to_pylist()}
    pictures = []
    for episode_id, step in zip(steps["episode_id"], steps["frame_index"], strict=True):
        row = meta[episode_id]
        path = episode_store.root / VIDEO_PATH.format(
            video_key=KEY,
            chunk_index=row[f"videos/{KEY}/chunk_index"],
            file_index=row[f"videos/{KEY}/file_index"],
        )
        time = row[f"videos/{KEY}/from_timestamp"] + step / 10.0
        pictures += decode_frames(path, [time], 10.0)
    policy = load_checkpoint(checkpoint)
    states = np.stack(steps[OBSERVATION_STATE].to_numpy()).astype(np.float32)
    actions = np.stack(steps["action"].to_numpy())

    def act(frames: list[np.ndarray]) -> np.ndarray:
        return policy.act_batch(states, np.zeros(len(steps), int), {"front": np.stack(frames)})

    assert found["operator_steps"] == len(steps) == 8
    assert found["vision_action_mse"] == pytest.approx(np.mean((act(pictures) - actions) ** 2))
    # The policy's actions follow the frames it is given: its neighbour step's picture moves
    # each action, so a score from other steps' frames would differ.
    assert np.abs(act(pictures[1:] + pictures[:1]) - act(pictures)).min() > 1e-3
