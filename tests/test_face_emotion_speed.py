"""face_emotion's speed paths give fer's results: folded BN, chunked batches, loader workers, fast mode."""

from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import FACE_EMOTION_DEMO, face_emotion_cli, train_cli
from lightning_modules.face_emotion import module as _face_emotion  # noqa: F401  (registers the method)
from lightning_modules.face_emotion.config import FaceEmotionModelConfig
from lightning_modules.face_emotion.emotion_net import SameMaxPool2d, fold_batchnorm, load_fer_model, tf_same_pad
from lightning_modules.face_emotion.frame_faces import FrameFaceFinder, box_iou
from lightning_modules.face_emotion.preprocess import crops_to_input


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])


def _finder(**model: object) -> FrameFaceFinder:
    cfg = FaceEmotionModelConfig()
    for key, value in model.items():
        setattr(cfg, key, value)
    return FrameFaceFinder(cfg)


def _face_batch(astronaut: np.ndarray, n: int) -> torch.Tensor:
    finder = _finder()
    frames = [np.roll(astronaut, (dy, dx), axis=(0, 1)) for dy, dx in np.random.default_rng(0).integers(-9, 9, (n, 2))]
    return crops_to_input(np.concatenate([finder(f).crops for f in frames]))


def test_same_max_pool_without_copy_equals_explicit_minus_inf_padding() -> None:
    pool = SameMaxPool2d(3, 2)
    for size in (60, 30, 15, 8, 7, 5):
        x = torch.randn(2, 3, size, size) - 5  # all negative: zero padding would win, -inf must not
        top, bottom = tf_same_pad(size, 3, 2)
        reference = F.max_pool2d(F.pad(x, (top, bottom, top, bottom), value=float("-inf")), 3, 2)
        assert torch.equal(pool(x), reference), size


def test_folded_batchnorm_and_chunks_give_the_same_probabilities(astronaut: np.ndarray) -> None:
    net = load_fer_model()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is left as it was
    faces = torch.cat([_face_batch(astronaut, 40), torch.rand(30, 1, 64, 64) * 2 - 1])  # real and noise inputs
    with torch.inference_mode():
        reference = net.logits(faces).softmax(dim=1)  # one forward of all 70
        assert len(faces) > net.chunk  # forward() splits this batch
        assert torch.allclose(net(faces), reference, atol=1e-6, rtol=0)
        assert torch.allclose(folded(faces), reference, atol=1e-5, rtol=0)
        # What the module runs: folded, with channels-last weights (a different oneDNN kernel, same numbers).
        channels_last = fold_batchnorm(net).to(memory_format=torch.channels_last)
        assert torch.allclose(channels_last(faces), reference, atol=1e-5, rtol=0)
    assert (reference[:40].argmax(1) == 3).float().mean() > 0.7  # the astronaut smiles: mostly happy


def test_scaled_detection_crops_from_the_full_frame(astronaut: np.ndarray) -> None:
    full, half = _finder()(astronaut), _finder(detect_scale=0.5)(astronaut)
    assert len(full.boxes) == len(half.boxes) == 1
    assert box_iou(full.boxes, half.boxes)[0, 0] > 0.8
    # Where the boxes are equal the crops (and so the scores) are the default's, bit for bit.
    same = FrameFaceFinder.__new__(FrameFaceFinder)
    same.__dict__.update(_finder(detect_scale=0.5).__dict__)
    same._detect = lambda frame, gray, scale, size_range=None: full.boxes  # type: ignore[method-assign]
    assert np.array_equal(same(astronaut).crops, full.crops)


def test_tracking_rescans_every_k_frames_and_when_a_face_is_lost(astronaut: np.ndarray) -> None:
    canvas = np.full((512, 700, 3), 90, np.uint8)
    frames = []
    for i in range(12):
        frame = canvas.copy()
        if i != 7:  # frame 7: the face is gone
            frame[:, 8 * i : 8 * i + 512] = astronaut
        frames.append(frame)
    default, tracked = _finder(), _finder(track_every=4)
    reference = [default(f, "v") for f in frames]
    found = [tracked(f, "v") for f in frames]
    # Scans: frame 0, every 4th after a scan, and frame 7 (lost), then 8 restarts the count.
    assert [f.full_scan for f in found] == [
        True,
        False,
        False,
        False,
        True,
        False,
        False,
        True,
        True,
        False,
        False,
        False,
    ]
    assert len(found[7].boxes) == 0
    for ref, got in zip(reference, found):
        assert len(ref.boxes) == len(got.boxes)
        if len(ref.boxes):
            assert box_iou(ref.boxes, got.boxes)[0, 0] > 0.7
            if np.array_equal(ref.boxes, got.boxes):
                assert np.array_equal(ref.crops, got.crops)
    # A new video starts with a full scan whatever the count.
    assert tracked(frames[1], "other").full_scan


@pytest.mark.parametrize("split", ["video", "frames"])
def test_loader_workers_write_the_same_bytes_as_one_process(face_videos: Path, tmp_path: Path, split: str) -> None:
    import shutil

    from benchmarks.face_emotion_vs_fer import build_videos

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("astronaut.avi", "camera.avi", "broken.avi"):
        shutil.copy(face_videos / name, videos / name)
    # Three faces per frame, moving: the face order within a row must not depend on the process layout.
    shutil.copy(build_videos(tmp_path / "gen", 6)[2], videos / "three.avi")
    single, workers = tmp_path / "single", tmp_path / "workers"
    assert face_emotion_cli(videos, single, tmp_path / "runs", "data.num_workers=0") == 0
    workers_args = ("data.num_workers=2", "data.batch_size_per_device=4", f"data.worker_split={split}")
    assert face_emotion_cli(videos, workers, tmp_path / "runs", *workers_args) == 0
    names = sorted(p.name for p in single.glob("*.csv"))
    assert names == ["astronaut-t300.csv", "camera-t300.csv", "three-t300.csv"]
    assert "box2" in (single / "three-t300.csv").read_text().splitlines()[0]
    assert sorted(p.name for p in workers.glob("*.csv")) == names
    for name in names:
        assert (workers / name).read_bytes() == (single / name).read_bytes(), name


def test_fast_mode_finds_the_default_faces(face_videos: Path, tmp_path: Path) -> None:
    import pandas as pd

    default, fast = tmp_path / "default", tmp_path / "fast"
    assert face_emotion_cli(face_videos, default, tmp_path / "runs") == 0
    assert face_emotion_cli(face_videos, fast, tmp_path / "runs", "model.detect_scale=0.5", "model.track_every=3") == 0
    a = pd.read_csv(default / "astronaut-t300.csv", index_col=0)
    b = pd.read_csv(fast / "astronaut-t300.csv", index_col=0)
    assert list(a.index) == list(b.index)  # the same frames have a face
    emotions = [c for c in a.columns if not c.startswith("box")]
    same_box = a["box0"] == b["box0"]
    assert (a.loc[same_box, emotions] == b.loc[same_box, emotions]).all().all()
    assert (a[emotions].idxmax(axis=1) == b[emotions].idxmax(axis=1)).all()


@pytest.mark.parametrize("bad", ["model.detect_scale=0", "model.detect_scale=1.5", "model.track_every=-1"])
def test_bad_fast_mode_values_are_one_error_line(
    face_videos: Path, tmp_path: Path, bad: str, capsys: pytest.CaptureFixture
) -> None:
    assert face_emotion_cli(face_videos, tmp_path / "out", tmp_path / "runs", bad) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and bad.split("=")[0] in err[0]


def test_every_video_failing_exits_non_zero_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.avi", "b.mp4"):
        (videos / name).write_bytes(b"RIFF\x00\x00\x00\x00not a video" * 20)
    assert face_emotion_cli(videos, tmp_path / "out", tmp_path / "runs", "data.num_workers=2") == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    assert "every video failed" in err[0] and "0 video(s) written" in err[0] and "2 failed" in err[0]
    assert "a.avi: cannot open video" in err[0] and "b.mp4: cannot open video" in err[0]


def test_timeline_panel_reaches_the_wandbface_emotion_cli(
    face_videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    assert (
        train_cli(
            "--config",
            FACE_EMOTION_DEMO,
            f"data.videos_dir={face_videos}",
            f"data.output_dir={out}",
            f"run.root={tmp_path / 'runs'}",
            "logger=wandb",
        )
        == 0
    )
    pngs = sorted((tmp_path / "runs").glob("face_emotion/*/wandb/offline-run-*/files/media/images/timeline/*.png"))
    # One timeline per video with a face (camera and coffee have none, broken.avi fails).
    assert [p.name.split("_")[0] for p in pngs] == ["astronaut"]
    image = cv2.imread(str(pngs[0]))
    assert image.shape[0] > 100 and image.std() > 10  # a drawn plot, not a blank picture


def test_the_finder_pickles_for_loader_workers() -> None:
    # The finder travels to loader workers by pickling: it must hold plain values only.
    import pickle

    finder = _finder(detect_scale=0.5, track_every=2)
    clone = pickle.loads(pickle.dumps(finder))
    assert isinstance(clone, FrameFaceFinder) and clone.detect_scale == 0.5
    assert not any(isinstance(v, types.ModuleType) for v in vars(clone).values())
