"""One contract, every registered policy, state-only and with a camera: shapes, save -> load
bit-exact, golden actions, determinism, and the refusal of observations that do not match."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies import available_policies, make_policy
from policies.checkpoint import CONFIG, STATS, LoadedPolicy, load_checkpoint, save_checkpoint
from policies.images import CameraInput, ImageStats, resize_frames
from policies.normalization import NormalizationStats
from policies.registry import config_class, config_from_dict, config_to_dict

TASKS = ("pick-place", "push")
# A camera whose input is not square, so that a height/width mix-up cannot pass.
CAMERA = CameraInput("front", 24, 32, "h264")
# Actions of each policy, freshly initialised with torch.manual_seed(0), on the fixed input
# below; a change here means a change in what a stored checkpoint of that policy does.
GOLDEN = {
    "mlp": [[0.12091643, -0.18508701, 0.31055167], [0.06748347, -0.18079475, 0.26719755]],
    "act": [[0.39595926, -0.02285276, -0.51212484], [0.50982821, -0.36446220, 0.09352503]],
}
GOLDEN_VISION = {
    "mlp": [[-0.17993683, -0.19044404, 0.19356672], [-0.20674835, -0.14730395, 0.20147307]],
    "act": [[0.36814812, 0.03211940, -0.49906820], [0.67015300, -0.28179172, 0.03074047]],
}
VARIANTS = [(name, vision) for name in available_policies() for vision in (False, True)]
IDS = [f"{name}-{'vision' if vision else 'state'}" for name, vision in VARIANTS]


def _config(name: str, vision: bool = False):
    extra = (
        {"cameras": (CAMERA,), "image_channels": (8, 16), "image_keypoints": 4, "image_features": 8}
        if vision
        else {}
    )
    return config_class(name)(state_dim=5, action_dim=3, tasks=TASKS, hidden=(16, 16), **extra)


def _input(vision: bool):
    states = torch.linspace(-1, 1, 10, dtype=torch.float32).reshape(2, 5)
    pixels = torch.sin(torch.linspace(0, 40, 2 * 3 * CAMERA.height * CAMERA.width))
    images = {CAMERA.name: pixels.reshape(2, 3, *CAMERA.size)} if vision else None
    return states, torch.tensor([0, 1]), images


def _frames(count: int, seed: int = 0) -> np.ndarray:
    """Camera frames at twice the policy's input size, as a camera might give them."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 2 * CAMERA.height, 2 * CAMERA.width, 3), dtype=np.uint8)


# One frame as the camera gives it.
FRAME = _frames(1)[0]


def _stats(vision: bool) -> NormalizationStats:
    data = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
    images = {CAMERA.name: ImageStats.from_frames(_frames(4))} if vision else None
    return NormalizationStats.from_arrays(data, np.zeros((50, 3), np.float32), images)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[tuple[str, bool], LoadedPolicy]:
    """A saved and reloaded checkpoint of every variant, shared by the refusal tests."""
    out = {}
    for name, vision in VARIANTS:
        torch.manual_seed(0)
        config = _config(name, vision)
        path = tmp_path_factory.mktemp("ckpt") / f"{name}-{vision}"
        save_checkpoint(path, make_policy(config), config, _stats(vision), meta={})
        out[name, vision] = load_checkpoint(path)
    return out


@pytest.mark.parametrize(("name", "vision"), VARIANTS, ids=IDS)
def test_policy_contract(name, vision, tmp_path):
    torch.manual_seed(0)
    config = _config(name, vision)
    model = make_policy(config).eval()
    states, tasks, images = _input(vision)
    with torch.no_grad():
        actions = model(states, tasks, images)
    assert actions.shape == (2, 3) and actions.abs().max() <= 1.0
    np.testing.assert_allclose(
        actions.numpy(), (GOLDEN_VISION if vision else GOLDEN)[name], atol=1e-6
    )
    if vision:  # the policy sees: other pictures, other actions
        with torch.no_grad():
            mirrored = model(states, tasks, {CAMERA.name: images[CAMERA.name].flip(-1)})
        assert not torch.allclose(mirrored, actions, atol=1e-4)
    chunk = getattr(model, "chunk_size", 1)
    if chunk > 1:  # an action-chunking policy's action is the first of its chunk
        with torch.no_grad():
            chunks = model.forward_chunk(states, tasks, images)
        assert chunks.shape == (2, chunk, 3) and torch.equal(chunks[:, 0], actions)
    # The same seed builds the same policy.
    torch.manual_seed(0)
    again = make_policy(config).state_dict()
    assert all(torch.equal(value, again[key]) for key, value in model.state_dict().items())

    stats = _stats(vision)
    path = save_checkpoint(tmp_path / "ckpt", model, config, stats, meta={"dataset_id": "d"})
    loaded = load_checkpoint(path)
    assert loaded.config == config and loaded.meta["dataset_id"] == "d"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])
    state = np.random.default_rng(1).normal(size=5).astype(np.float32)
    frames = {CAMERA.name: _frames(1, seed=1)[0]} if vision else None
    # What act must do by hand: the checkpoint's statistics, resize_frames for the camera.
    # Under inference mode, as robots run it (a transformer takes PyTorch's fused fast path
    # there, which differs from the autograd path in the last bits).
    with torch.inference_mode():
        inputs = None
        if vision:
            resized = resize_frames(frames[CAMERA.name], *CAMERA.size)
            inputs = {CAMERA.name: stats.images[CAMERA.name].normalize(resized)}
        x = torch.from_numpy(stats.normalize_state(state[None]))
        expected = model(x, torch.tensor([1]), inputs).numpy()[0]
    action = loaded.act(state, "push", frames)
    assert np.array_equal(action, expected)
    assert np.array_equal(loaded.act(state, "push", frames), action)  # deterministic
    with pytest.raises(ValueError, match="not trained on task"):
        loaded.act(state, "drawer-open", frames)


@pytest.mark.parametrize("name", available_policies())
def test_a_checkpoint_names_its_cameras_and_their_statistics(name, loaded, tmp_path):
    policy = loaded[name, True]
    assert policy.cameras == (CAMERA,)
    path = save_checkpoint(tmp_path / "c", policy.model, policy.config, policy.stats, meta={})
    written = json.loads((path / CONFIG).read_text())
    assert written["cameras"] == [{"name": "front", "height": 24, "width": 32, "encoding": "h264"}]
    images = json.loads((path / STATS).read_text())["images"]
    assert set(images) == {"front"} and len(images["front"]["mean"]) == 3
    reloaded = load_checkpoint(path).stats.images["front"]
    assert np.array_equal(reloaded.mean, policy.stats.images["front"].mean)
    # A vision checkpoint without its camera's statistics cannot normalise what it sees.
    bare = NormalizationStats.from_arrays(np.zeros((2, 5)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no image statistics for camera 'front'"):
        LoadedPolicy(policy.model, policy.config, bare, {})


@pytest.mark.parametrize("name", available_policies())
@pytest.mark.parametrize(
    ("images", "message"),
    [
        (None, r"missing camera 'front' \(24x32 px input, h264 frames\) \(cameras given: none\)"),
        (
            {"front": FRAME, "wrist": FRAME},
            "unknown camera 'wrist': this policy reads camera 'front'",
        ),
        ({"front": np.zeros((24, 32, 3), np.float32)}, r"uint8 .*\(H, W, 3\), got float32"),
        ({"front": np.zeros((24, 32, 4), np.uint8)}, r"got uint8 \(24, 32, 4\)"),
        ({"front": np.zeros((1, 24, 32, 3), np.uint8)}, r"\(H, W, 3\), got uint8 \(1, 24, 32, 3\)"),
    ],
)
def test_a_vision_policy_refuses_observations_that_do_not_match(name, loaded, images, message):
    policy = loaded[name, True]
    with pytest.raises(ValueError, match=message):
        policy.act(np.zeros(5, np.float32), "push", images)
    with pytest.raises(ValueError, match=r"expected uint8 frames of shape \(3, H, W, 3\)"):
        policy.act_batch(np.zeros((3, 5), np.float32), np.zeros(3, int), {"front": _frames(2)})


@pytest.mark.parametrize("name", available_policies())
def test_a_state_policy_refuses_camera_frames(name, loaded):
    with pytest.raises(ValueError, match="unknown camera 'front'.*no cameras"):
        loaded[name, False].act(np.zeros(5, np.float32), "push", {"front": FRAME})


@pytest.mark.parametrize("name", available_policies())
def test_checkpoints_written_before_cameras_existed_still_load(name):
    config = _config(name)
    old = config_to_dict(config)
    for key in ("cameras", "image_channels", "image_keypoints", "image_features"):
        del old[key]
    assert config_from_dict(old) == config and config.cameras == ()
    stats = _stats(vision=False)
    assert "images" not in stats.to_dict()  # a state policy's stats.json is as it was
    assert NormalizationStats.from_dict(stats.to_dict()).images == {}


def test_unknown_policy_lists_the_known_ones():
    with pytest.raises(ValueError, match="known: .*mlp.*did you mean 'mlp'"):
        config_class("mpl")


def test_checkpoints_are_written_atomically(tmp_path):
    config = _config("mlp")
    stats = NormalizationStats.from_arrays(
        np.zeros((2, 5), np.float32), np.zeros((2, 3), np.float32)
    )
    path = save_checkpoint(tmp_path / "ckpt", make_policy(config), config, stats, meta={})
    save_checkpoint(path, make_policy(config), config, stats, meta={"second": True})
    assert load_checkpoint(path).meta == {"second": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("name", available_policies())
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"state_dim": 0}, "must be positive"),
        ({"tasks": ()}, "non-empty and unique"),
        ({"tasks": ("push", "push")}, "non-empty and unique"),
        ({"hidden": (0,)}, "hidden widths"),
        ({"cameras": (CAMERA, CAMERA)}, "camera names must be unique"),
        ({"cameras": (CAMERA,), "image_channels": ()}, "image_channels must be positive"),
    ],
)
def test_every_policy_refuses_a_malformed_config(name, fields, message):
    good = {"state_dim": 5, "action_dim": 3, "tasks": TASKS, "hidden": (16,)}
    with pytest.raises(ValueError, match=message):
        config_class(name)(**{**good, **fields})
