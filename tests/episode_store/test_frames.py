"""Frames of sampled steps decoded from packed camera videos, as training reads them."""

from __future__ import annotations

import pickle
from fractions import Fraction

import av
import numpy as np
import pyarrow as pa
import pytest
import torch

from services.episode_store.frames import FrameReader, FrameRequestError, locate, video_path
from services.episode_store.videos import pack
from services.episodes.cameras import VideoFormat

KEY = "observation.images.front"
FPS = 20
SIZE = 64
# (chunk, file) -> the lengths of the episodes packed in it, in order.
LAYOUT = {(0, 0): [7, 5, 9], (0, 1): [6, 8], (1, 0): [4]}


def _picture(g: int) -> np.ndarray:
    """Frame number ``g`` of the fixture: a gradient, a level and a square that moves, so
    that every frame is far from every other even after lossy coding."""
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    frame[..., 0] = np.linspace(0, 160, SIZE, dtype=np.uint8)[None, :]
    frame[..., 1] = (g * 37) % 200
    frame[..., 2] = 60
    y, x = (g * 11) % (SIZE - 16), (g * 23) % (SIZE - 16)
    frame[y : y + 16, x : x + 16] = 250
    return frame


def _encode(path, pictures, video_format: VideoFormat) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(video_format.codec, rate=FPS, options=video_format.options())
        stream.width = stream.height = SIZE
        stream.pix_fmt = video_format.pix_fmt
        stream.time_base = Fraction(1, FPS)
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.fixture(scope="module", params=["libsvtav1", "libx264"])
def store(request, tmp_path_factory):
    """A store with three video files of packed episodes, its meta/episodes rows, and each
    episode's frames as they were before encoding."""
    root = tmp_path_factory.mktemp(request.param)
    video_format = VideoFormat(codec=request.param, gop=2, crf=30)
    rows = {c: [] for c in ("episode_index", "chunk", "file", "from")}
    truth, g = [], 0
    for file, lengths in LAYOUT.items():
        tracks = []
        for length in lengths:
            pictures = [_picture(g + i) for i in range(length)]
            g += length
            tracks.append(root / f"track-{len(truth)}.mp4")
            _encode(tracks[-1], pictures, video_format)
            rows["episode_index"].append(len(truth))
            rows["chunk"].append(file[0])
            rows["file"].append(file[1])
            truth.append(pictures)
        path = root / video_path(KEY, file)
        path.parent.mkdir(parents=True, exist_ok=True)
        spans, _ = pack(tracks, Fraction(FPS), path)  # as the store packs them
        rows["from"] += [span.from_timestamp for span in spans]
        for track in tracks:
            track.unlink()
    episodes = pa.table(
        {
            "episode_index": rows["episode_index"],
            f"videos/{KEY}/chunk_index": rows["chunk"],
            f"videos/{KEY}/file_index": rows["file"],
            f"videos/{KEY}/from_timestamp": rows["from"],
        }
    )
    return root, episodes, truth


def _check(decoded, truth, steps) -> None:
    """Each decoded frame is near its own frame and nearer to it than to any other."""
    every = np.stack([p for pictures in truth for p in pictures]).astype(np.float32)
    first = np.cumsum([0] + [len(p) for p in truth])
    for picture, (episode, frame) in zip(decoded, steps, strict=True):
        error = np.abs(every - picture.astype(np.float32)).mean(axis=(1, 2, 3))
        assert int(error.argmin()) == first[episode] + frame, (episode, frame)
        assert error[first[episode] + frame] < 6.0


def test_random_steps_across_packed_episodes_and_files_are_the_right_frames(store):
    root, episodes, truth = store
    rng = np.random.default_rng(0)
    episode = rng.integers(0, len(truth), 40)
    frame = np.array([rng.integers(0, len(truth[e])) for e in episode])
    with FrameReader(root) as reader:
        decoded = reader.frames(KEY, locate(episodes, KEY, episode, frame, FPS))
    assert decoded.shape == (40, SIZE, SIZE, 3) and decoded.dtype == np.uint8
    _check(decoded, truth, list(zip(episode, frame, strict=True)))


def test_first_and_last_step_of_every_episode(store):
    root, episodes, truth = store
    steps = [(e, f) for e, pictures in enumerate(truth) for f in (0, len(pictures) - 1)]
    episode, frame = (np.array(column) for column in zip(*steps, strict=True))
    reader = FrameReader(root, open_files=1)  # files closed and reopened on the way
    decoded = reader.frames(KEY, locate(episodes, KEY, episode, frame, FPS))
    _check(decoded, truth, steps)


def test_steps_in_one_group_of_pictures_share_a_pass_of_the_decoder(store):
    root, episodes, truth = store
    frames = np.arange(len(truth[2]))
    reader = FrameReader(root)
    decoded = reader.frames(KEY, locate(episodes, KEY, np.full(len(frames), 2), frames, FPS))
    _check(decoded, truth, [(2, f) for f in frames])
    # One seek to the episode's first keyframe, then every frame decoded once, in order.
    assert reader.seeks == 1
    assert reader.decoded == len(frames)


def test_a_reader_sent_to_a_worker_opens_its_own_files(store):
    root, episodes, truth = store
    reader = FrameReader(root)
    requests = locate(episodes, KEY, np.array([0, 4]), np.array([3, 2]), FPS)
    before = reader.frames(KEY, requests)
    copy = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(copy.frames(KEY, requests), before)


class _Steps(torch.utils.data.Dataset):
    """A training dataset's shape: one step's frame per item, one reader per worker."""

    def __init__(self, reader: FrameReader, requests) -> None:
        self.reader, self.requests = reader, requests

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.reader.frames(KEY, [self.requests[i]])[0]


def test_dataloader_workers_forked_after_the_parent_read_decode_the_right_frames(store):
    root, episodes, truth = store
    steps = [(e, f) for e, pictures in enumerate(truth) for f in range(0, len(pictures), 2)]
    episode, frame = (np.array(column) for column in zip(*steps, strict=True))
    reader = FrameReader(root)
    requests = locate(episodes, KEY, episode, frame, FPS)
    reader.frames(KEY, requests)  # the parent's files are open when the workers fork
    loader = torch.utils.data.DataLoader(
        _Steps(reader, requests), batch_size=4, num_workers=2, multiprocessing_context="fork"
    )
    _check(torch.cat(list(loader)).numpy(), truth, steps)


def test_a_timestamp_outside_the_file_is_refused_by_name(store):
    root, episodes, truth = store
    reader = FrameReader(root)
    end = sum(LAYOUT[(0, 0)]) / FPS  # one period past the file's last frame
    with pytest.raises(FrameRequestError, match=r"outside .*chunk-000/file-000\.mp4"):
        reader.frames(KEY, [((0, 0), end)])
    with pytest.raises(FrameRequestError, match="outside"):
        reader.frames(KEY, [((0, 1), -0.1)])
    with pytest.raises(FrameRequestError, match="no frame of .* at 0.0250 s"):
        reader.frames(KEY, [((0, 0), 0.5 / FPS)])
    with pytest.raises(FrameRequestError, match="no video file .*file-009"):
        reader.frames(KEY, [((0, 0), 0.0), ((0, 9), 0.0)])
    (root / video_path(KEY, (0, 8))).write_bytes(b"not a video")
    with pytest.raises(FrameRequestError, match="file-008.mp4 is not a readable video"):
        reader.frames(KEY, [((0, 8), 0.0)])
    whole = (root / video_path(KEY, (0, 0))).read_bytes()
    (root / video_path(KEY, (0, 7))).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(FrameRequestError, match="file-007.mp4 is not a readable video"):
        reader.frames(KEY, [((0, 7), 0.0)])
    # The reader still answers after refusing.
    _check(reader.frames(KEY, [((0, 0), 0.0)]), truth, [(0, 0)])


def test_a_damaged_file_gives_frames_or_a_refusal_naming_it_never_an_ffmpeg_error(store):
    root, _, _ = store
    data = bytearray((root / video_path(KEY, (0, 0))).read_bytes())
    for i in range(100, len(data) // 2):  # the header stays, half the pictures are noise
        data[i] = (data[i] * 7 + 13) % 256
    (root / video_path(KEY, (0, 6))).write_bytes(bytes(data))
    reader = FrameReader(root)
    refused = 0
    for k in range(sum(LAYOUT[(0, 0)])):
        try:
            reader.frames(KEY, [((0, 6), k / FPS)])
        except FrameRequestError as exc:
            assert "file-006.mp4" in str(exc)
            refused += 1
    assert refused


def test_an_episode_or_camera_the_table_does_not_have_is_refused(store):
    _, episodes, _ = store
    with pytest.raises(FrameRequestError, match="episode 99 is not in meta/episodes"):
        locate(episodes, KEY, np.array([0, 99]), np.array([0, 0]), FPS)
    with pytest.raises(FrameRequestError, match="no camera 'observation.images.wrist'"):
        locate(episodes, "observation.images.wrist", np.array([0]), np.array([0]), FPS)
