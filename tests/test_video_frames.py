"""Video frame sampling, decoding, sharding and resume for the Face of Populism pipeline."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage import data as skdata

import datamodules.video_frames as vf
from datamodules.video_frames import (
    VideoFramesDataConfig,
    VideoFramesDataModule,
    VideoFramesDataset,
    VideoJob,
    list_video_jobs,
    sample_frame_indices,
    write_video_output_atomically,
)
from tenfold.errors import ConfigError, DataError

SIZE = 64
FPS = 10.0
NUM_GOOD = 5
MANIFEST = Path(__file__).resolve().parents[1] / "data" / "face_of_populism" / "raw" / "yt-urls.csv"


def _frame(photo: np.ndarray, index: int) -> np.ndarray:
    """A photo frame whose two top-left patches spell its index in base 16, 16 gray levels per digit: far
    apart enough to survive MJPG compression, so a decoded frame tells which frame it is."""
    frame = photo.copy()
    frame[:16, :16] = 16 * (index % 16)
    frame[:16, 16:32] = 16 * (index // 16)
    return frame


def write_video(path: Path, num_frames: int, photo: np.ndarray) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (SIZE, SIZE))
    assert writer.isOpened()
    for i in range(num_frames):
        writer.write(_frame(photo, i))
    writer.release()
    return path


def patch_index(frame: np.ndarray) -> int:
    # Patch centres: away from JPEG block edges.
    return round(float(frame[4:12, 4:12].mean()) / 16) + 16 * round(float(frame[4:12, 20:28].mean()) / 16)


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`0.avi` .. `4.avi` (120 frames; astronaut or camera) and a corrupt `5.mp4`."""
    root = tmp_path_factory.mktemp("videos")
    astronaut = cv2.resize(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR), (SIZE, SIZE))
    camera = cv2.cvtColor(cv2.resize(skdata.camera(), (SIZE, SIZE)), cv2.COLOR_GRAY2BGR)
    for i in range(NUM_GOOD):
        write_video(root / f"{i}.avi", 120, astronaut if i % 2 == 0 else camera)
    (root / "5.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return root


def _jobs(videos: Path) -> list[VideoJob]:
    return list_video_jobs(VideoFramesDataConfig(videos_dir=str(videos)))


def _collect(dataset: VideoFramesDataset) -> list[vf.VideoFrame]:
    return list(dataset)


# ---- sampling


@pytest.mark.parametrize("n", [120, 299, 300, 301, 599, 600, 1000, 9000, 27_417])
def test_t300_indices_are_every_floor_n_over_300th_frame(n: int) -> None:
    idx = sample_frame_indices(n, "t300")
    stride = max(1, n // 300)
    assert idx[0] == 0 and idx[-1] < n
    assert set(np.diff(idx)) <= {stride}
    assert len(idx) == -(-n // stride)  # ceil: fer keeps frame i when i % stride == 0
    if n >= 300:
        assert 300 <= len(idx) < 600  # "about 300", up to 599 just below a multiple of 300
    else:
        assert idx == list(range(n))  # stride 0 would crash fer; clamped to every frame


def test_t300_exact_counts() -> None:
    assert len(sample_frame_indices(9000, "t300")) == 300
    assert sample_frame_indices(9000, "t300")[:3] == [0, 30, 60]
    assert len(sample_frame_indices(599, "t300")) == 599
    assert len(sample_frame_indices(601, "t300")) == 301


@pytest.mark.parametrize("n,expected", [(1, 1), (50, 1), (51, 2), (120, 3), (1000, 20), (1001, 21)])
def test_f50_indices_are_every_50th_frame(n: int, expected: int) -> None:
    idx = sample_frame_indices(n, "f50")
    assert len(idx) == expected
    assert idx == list(range(0, n, 50))


def test_window_stride_uses_the_trimmed_length() -> None:
    idx = sample_frame_indices(10_000, "t300", start_frame=100, end_frame=700)
    assert (idx[0], idx[1], idx[-1], len(idx)) == (100, 102, 698, 300)
    assert sample_frame_indices(200, "f50", 30, 10_000) == [30, 80, 130, 180]  # end clamped to the video
    assert sample_frame_indices(200, "f50", 150, 100) == []


def test_unknown_scheme_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="t300, f50"):
        sample_frame_indices(100, "f30")


# ---- decoding


def test_decodes_the_sampled_frames_in_order(videos: Path) -> None:
    frames = _collect(VideoFramesDataset([VideoJob("0", str(videos / "0.avi"))], "f50"))
    assert [f.frame_index for f in frames] == [0, 50, 100]
    assert [patch_index(f.frame) for f in frames] == [0, 50, 100]
    assert [f.is_last for f in frames] == [False, False, True]
    assert all(f.frame.dtype == np.uint8 and f.frame.shape == (SIZE, SIZE, 3) for f in frames)
    t300 = _collect(VideoFramesDataset([VideoJob("0", str(videos / "0.avi"))], "t300"))
    assert [f.frame_index for f in t300] == list(range(120))


def test_manifest_trim_window_in_seconds(videos: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "urls.csv"
    pd.DataFrame(
        {
            "url": ["u0", "u1"],
            "crop": ["yes", "no"],
            "start": [2.0, None],
            "end": [8.0, None],
            "party": ["SRB_ SNS", "SRB_ SNS"],
        }
    ).to_csv(manifest, index=False)
    jobs = list_video_jobs(VideoFramesDataConfig(videos_dir=str(videos), manifest=str(manifest)))
    assert jobs == [VideoJob("0", str(videos / "0.avi"), 2.0, 8.0), VideoJob("1", str(videos / "1.avi"))]
    frames = _collect(VideoFramesDataset(jobs[:1], "f50"))
    # [2 s, 8 s) at 10 fps = video frames [20, 80): the clip's frames 0 and 50 are video frames 20 and 70.
    assert [f.frame_index for f in frames] == [0, 50]
    assert [patch_index(f.frame) for f in frames] == [20, 70]


def test_released_manifest_rows_become_jobs(videos: Path) -> None:
    assert MANIFEST.is_file(), f"the released manifest ships at {MANIFEST}"
    jobs = list_video_jobs(VideoFramesDataConfig(videos_dir=str(videos), manifest=str(MANIFEST)))
    assert len(jobs) == 220
    assert jobs[0] == VideoJob("0", str(videos / "0.avi"))
    assert (jobs[5].start_s, jobs[5].end_s) == (0.0, 350.0)
    assert (jobs[9].start_s, jobs[9].end_s) == (None, None)  # empty crop cell: used whole
    assert sum(j.start_s is not None for j in jobs) == 45  # the digest's 45 trimmed videos


# ---- sharding, failures, resume


def test_two_ranks_two_workers_cover_each_video_once(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = _jobs(videos)
    assert len(jobs) == NUM_GOOD + 1
    seen: list[str] = []
    failed: list[str] = []
    for rank in range(2):
        for worker in range(2):
            monkeypatch.setattr(vf, "get_worker_info", lambda w=worker: SimpleNamespace(id=w, num_workers=2))
            ds = VideoFramesDataset(jobs, "f50", str(tmp_path), rank=rank, world_size=2)
            frames = _collect(ds)
            seen += [f.video_id for f in frames if f.is_last]
            failed += ds.failed_videos
    assert sorted(seen) == [str(i) for i in range(NUM_GOOD)]  # each good video finished exactly once
    assert failed == [str(videos / "5.mp4")]
    lines = (tmp_path / "failed.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(videos / "5.mp4") + "\t")


def test_real_dataloader_workers_and_failed_file(videos: Path, tmp_path: Path) -> None:
    dm = VideoFramesDataModule(
        VideoFramesDataConfig(
            videos_dir=str(videos), scheme="f50", output_dir=str(tmp_path), batch_size_per_device=4, num_workers=2
        )
    )
    dm.check()
    pairs = []
    for batch in dm.predict_dataloader():
        assert len(batch["frame"]) == len(batch["video_id"]) <= 4
        pairs += list(zip(batch["video_id"], batch["frame_index"].tolist()))
    assert sorted(pairs) == sorted((str(i), k) for i in range(NUM_GOOD) for k in (0, 50, 100))
    assert (tmp_path / "failed.txt").read_text().split("\t")[0] == str(videos / "5.mp4")


def test_resume_skips_videos_with_outputs(videos: Path, tmp_path: Path) -> None:
    write_video_output_atomically(vf.output_path(tmp_path, "1", "f50"), pd.DataFrame({"a": [1]}))
    write_video_output_atomically(vf.output_path(tmp_path, "3", "t300"), pd.DataFrame({"a": [1]}))  # other scheme
    ids = {f.video_id for f in _collect(VideoFramesDataset(_jobs(videos), "f50", str(tmp_path)))}
    assert ids == {"0", "2", "3", "4"}


def test_missing_manifest_video_is_recorded_not_fatal(videos: Path, tmp_path: Path) -> None:
    jobs = [VideoJob("7", str(tmp_path / "7.mp4")), VideoJob("0", str(videos / "0.avi"))]
    ds = VideoFramesDataset(jobs, "f50", str(tmp_path / "out"))
    assert {f.video_id for f in ds} == {"0"}
    assert ds.failed_videos == [str(tmp_path / "7.mp4")]


def test_truncated_video_fails_instead_of_ending_early(videos: Path, tmp_path: Path) -> None:
    data = (videos / "0.avi").read_bytes()
    (tmp_path / "9.avi").write_bytes(data[: len(data) // 2])  # header still announces 120 frames
    job = VideoJob("9", str(tmp_path / "9.avi"))
    ds = VideoFramesDataset([job], "f50", str(tmp_path / "out"))
    assert not any(f.is_last for f in ds)  # so no output is written and a resumed run retries it
    assert ds.failed_videos == [job.path]
    assert "truncated" in (tmp_path / "out" / "failed.txt").read_text()
    lenient = VideoFramesDataset([job], "f50", min_decoded_fraction=0.0)
    assert [f.is_last for f in lenient][-1]


def test_lightning_predict_accepts_the_loader(videos: Path) -> None:
    import lightning as L
    import torch

    class FrameCounter(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def predict_step(self, batch: dict, batch_idx: int) -> list[tuple[str, int]]:
            return list(zip(batch["video_id"], batch["frame_index"].tolist()))

    dm = VideoFramesDataModule(
        VideoFramesDataConfig(videos_dir=str(videos), scheme="f50", num_workers=0, batch_size_per_device=2)
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    out = [pair for batch in trainer.predict(FrameCounter(), datamodule=dm) for pair in batch]
    assert sorted(out) == sorted((str(i), k) for i in range(NUM_GOOD) for k in (0, 50, 100))


# ---- splitting a rank's videos by frames


class FrameNumber:
    """A frame_fn that reads the frame's index off its patches and notes the segment it was given."""

    def __call__(self, frame: np.ndarray, segment: object) -> SimpleNamespace:
        return SimpleNamespace(index=patch_index(frame), segment=segment, frame=None)


def _split_loader(videos: Path, jobs_dir: Path, batch: int, **data: object):
    cfg = VideoFramesDataConfig(
        videos_dir=str(jobs_dir),
        scheme="t300",
        batch_size_per_device=batch,
        num_workers=2,
        worker_split="frames",
        **data,
    )
    dm = VideoFramesDataModule(cfg)
    dm.frame_fn = FrameNumber()
    return dm.predict_dataloader()


@pytest.mark.parametrize("batch", [3, 4, 7])
def test_frame_split_workers_deliver_every_video_in_frame_order(
    videos: Path, tmp_path: Path, batch: int
) -> None:
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    for name in ("0.avi", "1.avi", "5.mp4"):
        (jobs_dir / name).symlink_to(videos / name)
    # Truncated between the two good videos: every worker must stop at the same frame and keep numbering the
    # same chunks, or the next video's chunks come out of order.
    data = (videos / "2.avi").read_bytes()
    (jobs_dir / "2.avi").write_bytes(data[: len(data) // 3])  # sorted between 1 and 3
    (jobs_dir / "3.avi").symlink_to(videos / "3.avi")
    out = tmp_path / "out"
    delivered: dict[str, list[int]] = {}
    last: list[tuple[str, int]] = []
    for batch_out in _split_loader(videos, jobs_dir, batch, output_dir=str(out)):
        assert len(batch_out["video_id"]) <= batch
        for video, index, faces, is_last in zip(
            batch_out["video_id"], batch_out["frame_index"].tolist(), batch_out["faces"], batch_out["is_last"].tolist()
        ):
            assert faces.index == index  # the frame_fn saw this frame's pixels
            assert faces.segment == (video, faces.segment[1])  # a (video, chunk) segment
            delivered.setdefault(video, []).append(index)
            if is_last:
                last.append((video, index))
    assert delivered["0"] == delivered["1"] == delivered["3"] == list(range(120))  # in order, each frame once
    assert delivered["2"] == list(range(len(delivered["2"]))) and len(delivered["2"]) < 120
    assert last == [("0", 119), ("1", 119), ("3", 119)]  # the truncated video gets no is_last
    failed = [line.split("\t")[0] for line in (out / "failed.txt").read_text().splitlines()]
    assert sorted(failed) == [str(jobs_dir / "2.avi"), str(jobs_dir / "5.mp4")]  # once each, not once per worker


def test_frame_split_skips_videos_done_before_the_run(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_video_output_atomically(vf.output_path(out, "1", "t300"), pd.DataFrame({"a": [1]}))
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    for name in ("0.avi", "1.avi", "2.avi"):
        (jobs_dir / name).symlink_to(videos / name)
    ids = [v for b in _split_loader(videos, jobs_dir, 8, output_dir=str(out)) for v in b["video_id"]]
    assert ids == ["0"] * 120 + ["2"] * 120


@pytest.mark.parametrize(
    ("split", "workers", "rank_videos", "expected"),
    [
        ("auto", 2, 1, True),
        ("auto", 2, 2, False),
        ("auto", 0, 1, False),
        ("video", 2, 1, False),
        ("frames", 2, 5, True),
    ],
)
def test_auto_splits_frames_only_when_workers_would_idle(
    videos: Path, split: str, workers: int, rank_videos: int, expected: bool
) -> None:
    dm = VideoFramesDataModule(VideoFramesDataConfig(videos_dir=str(videos), num_workers=workers, worker_split=split))
    assert dm.split_frames(rank_videos) is expected


# ---- outputs and config errors


def test_atomic_write_leaves_only_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pd.DataFrame({"box0": ["[1, 2, 3, 4]"], "angry0": [0.12]})
    target = tmp_path / "out" / "0-t300.csv"
    write_video_output_atomically(target, frame)
    assert [p.name for p in target.parent.iterdir()] == ["0-t300.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(target, index_col=0), frame)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", crash)
    with pytest.raises(OSError):
        write_video_output_atomically(tmp_path / "out" / "1-t300.csv", frame)
    assert [p.name for p in target.parent.iterdir()] == ["0-t300.csv"]  # no temp file, no partial output


def test_check_names_the_missing_keys(videos: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.videos_dir"):
        VideoFramesDataModule(VideoFramesDataConfig()).check()
    with pytest.raises(DataError, match="data.videos_dir"):
        VideoFramesDataModule(VideoFramesDataConfig(videos_dir=str(tmp_path / "nope"))).check()
    with pytest.raises(DataError, match="data.manifest"):
        VideoFramesDataModule(VideoFramesDataConfig(videos_dir=str(videos), manifest=str(tmp_path / "x.csv"))).check()
    with pytest.raises(DataError, match="no video files"):
        VideoFramesDataModule(VideoFramesDataConfig(videos_dir=str(tmp_path))).check()
    with pytest.raises(ConfigError, match="data.scheme"):
        VideoFramesDataModule(VideoFramesDataConfig(videos_dir=str(videos), scheme="t100")).check()
