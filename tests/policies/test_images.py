"""Camera frames into a policy: resizing in one place, DrQ's random shift, image statistics,
the camera description a checkpoint carries, and the encoder's keypoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.encoders import SpatialSoftmax
from policies.images import CameraInput, ImageStats, random_shift, resize_frames


def test_resize_frames_gives_the_policys_input_in_0_1():
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    resized = resize_frames(frames, 24, 32)
    assert resized.shape == (2, 3, 24, 32) and resized.dtype == torch.float32
    assert resized.min() >= 0 and resized.max() <= 1
    # At the input size already: the same pixels, channels first, on the 0-1 scale.
    same = resize_frames(frames[0], 48, 64)
    assert torch.equal(same[0], torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 255)
    # Colour survives resizing: a uniform frame stays that colour.
    red = np.zeros((90, 120, 3), np.uint8)
    red[..., 0] = 200
    np.testing.assert_allclose(resize_frames(red, 24, 32)[0, :, 5, 5], [200 / 255, 0, 0], atol=1e-6)


def test_resize_frames_averages_detail_it_cannot_keep():
    """Antialiased: a 1-pixel checkerboard shrunk 4x is grey, not a sampled pattern."""
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    small = resize_frames(np.repeat(board[..., None], 3, axis=-1), 16, 16)
    np.testing.assert_allclose(small[0, :, 2:-2, 2:-2], 0.5, atol=0.02)


@pytest.mark.parametrize(
    "frames",
    [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8)],
)
def test_resize_frames_refuses_what_is_not_uint8_rgb(frames):
    with pytest.raises(ValueError, match="expected uint8 frames"):
        resize_frames(frames, 4, 4)


def test_random_shift_crops_each_sample_at_its_own_offset():
    images = torch.rand(1, 3, 12, 10).expand(16, -1, -1, -1)
    pad = 2
    shifted = random_shift(images, pad, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape
    padded = torch.nn.functional.pad(images[:1], (pad,) * 4, mode="replicate")[0]
    crops = {
        (dy, dx): padded[:, dy : dy + 12, dx : dx + 10]
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
    }
    offsets = [next(o for o, c in crops.items() if torch.equal(c, s)) for s in shifted]
    assert len(set(offsets)) > 4  # per-sample shifts, not one for the batch
    again = random_shift(images, pad, torch.Generator().manual_seed(0))
    assert torch.equal(again, shifted)  # a seeded generator gives the same shifts
    assert random_shift(images, 0) is images


def test_image_stats_normalise_per_channel_and_round_trip():
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[..., 0] = 255
    frames[:2, ..., 1] = 255
    stats = ImageStats.from_frames(frames)
    np.testing.assert_allclose(stats.mean, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(stats.std, [1e-6, 0.5, 1e-6])  # constant channels: unscaled
    normalised = stats.normalize(resize_frames(frames, 8, 8))
    np.testing.assert_allclose(normalised[:, 1].unique(), [-1.0, 1.0])
    assert torch.count_nonzero(normalised[:, 0]) == 0
    again = ImageStats.from_dict(stats.to_dict())
    assert np.array_equal(again.mean, stats.mean) and np.array_equal(again.std, stats.std)
    with pytest.raises(ValueError, match="3 channels"):
        ImageStats(mean=np.zeros(4), std=np.ones(4))


def test_a_camera_input_round_trips_and_refuses_unknown_encodings():
    camera = CameraInput("wrist", 64, 96, "raw")
    assert CameraInput.from_dict(camera.to_dict()) == camera
    with pytest.raises(ValueError, match="encoding must be one of"):
        CameraInput("wrist", 64, 64, "av1")
    with pytest.raises(ValueError, match="size must be positive"):
        CameraInput("wrist", 0, 64, "raw")


def test_spatial_softmax_finds_where_a_feature_map_lights_up():
    pool = SpatialSoftmax(channels=1, keypoints=1)
    with torch.no_grad():
        pool.keypoints.weight.fill_(1.0)
        pool.keypoints.bias.zero_()
    maps = torch.zeros(1, 1, 5, 9)
    maps[0, 0, 1, 6] = 50.0  # row 1 of 5, column 6 of 9
    x, y = pool(maps)[0].tolist()
    assert x == pytest.approx(-1 + 2 * 6 / 8, abs=1e-4) and y == pytest.approx(-0.5, abs=1e-4)
