"""Sampled video frames for the Face of Populism pipeline (inference only).

Layout: `data.videos_dir` holds one file per video. With `data.manifest` (the `yt-urls.csv` layout: url, crop,
start, end, party) the video of manifest row i (0-based, header excluded) is `<videos_dir>/<i>.<ext>`, as the
released per-frame CSVs are named `<i>-<scheme>.csv`; rows with crop == "yes" are trimmed to [start, end]
seconds. Without a manifest every video file in `videos_dir` is used whole, its id being the file stem.

Frame sampling follows `fer.Video.analyze(frequency=stride)` (digest §2.2): frames are read sequentially from
frame 0 of the (trimmed) clip and every stride-th one is kept; t300: stride = floor(frame_count / 300),
f50: stride = 50.

Ranks always split the work by video; `data.worker_split` says how the DataLoader workers share it:
- `video`: video k goes to shard k % (world_size * num_workers), where the shard of a worker is
  rank * num_workers + worker_id, and that worker decodes it start to end. Decoding is then parallel too, which
  is right for t300 on many long videos, where decoding costs more than detection.
- `frames`: rank r takes videos r, r + world_size, ...; every worker of the rank decodes every one of them, and
  keeps every num_workers-th chunk of
  `batch_size_per_device` sampled frames (chunks numbered across the rank's videos). Each worker yields whole
  chunks, one batch each (an empty batch for a chunk it could not finish), so the DataLoader's round-robin over
  the workers hands them over in frame order. This keeps every worker busy when the rank has fewer videos than
  workers, or videos of very different lengths; the cost is the decoding of the frames each worker skips.
- `auto` (default): `frames` when the rank has fewer videos than workers, else `video`.
Either way a consumer sees each video's frames in order and the last one flagged `is_last` (the cue to write
its output).

Per-frame work (face detection and crops for face_emotion) runs where the frames are decoded: the method hands
the datamodule a `frame_fn(frame, segment)`, applied to each sampled frame in order inside the loader worker
(one cv2 and one torch thread per worker). `segment` is the video id with `video`, (video id, chunk) with
`frames`: it changes whenever the next frame is not the next sampled frame of the same video, so a stateful
frame_fn (face tracking) knows when to start again. A frame_fn result with a `frame` attribute replaces the
decoded frame in the batch (set it to the frame only when the consumer needs the pixels: frames are pickled
between processes).
"""

from __future__ import annotations

import enum
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules.frame_sampling import SamplingScheme
from tenfold.errors import ConfigError, DataError
from tenfold.method import MethodDataModule

if TYPE_CHECKING:
    import pandas as pd  # imported where used: its import is start-up time before the first frame

log = logging.getLogger(__name__)

SCHEMES = tuple(SamplingScheme)
T300_TARGET_FRAMES = 300  # t300: about 300 frames per video
F50_STRIDE = 50  # f50: every 50th frame
MANIFEST_COLUMNS = ("url", "crop", "start", "end", "party")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
FAILED_FILE = "failed.txt"


class WorkerSplit(enum.StrEnum):
    """How a rank's DataLoader workers share its videos (module docstring)."""

    auto = "auto"
    video = "video"
    frames = "frames"


@dataclass
class VideoFramesDataConfig:
    videos_dir: str | None = None
    manifest: str | None = None  # CSV in the yt-urls.csv layout; None: every video file in videos_dir, untrimmed
    scheme: SamplingScheme = SamplingScheme.t300
    output_dir: str | None = None  # per-video outputs `<video_id>-<scheme>.csv` and failed.txt; None: no resume
    batch_size_per_device: int = 32  # frames per batch
    num_workers: int = 2
    worker_split: WorkerSplit = WorkerSplit.auto  # by video or by chunks of frames (module docstring)
    # The container's frame count (CAP_PROP_FRAME_COUNT) is an estimate for many mp4/webm files; True counts
    # frames with a grab pass first (one extra demux+decode of each video) so t300's stride uses the real count.
    exact_frame_count: bool = False
    # A stream that ends before this fraction of the frames its header announces is taken as a truncated
    # download and failed (its partial means would bias the video's scores); 0 accepts any length.
    min_decoded_fraction: float = 0.9
    video_extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))


class VideoJob(NamedTuple):
    """One video to decode; start_s/end_s (seconds) are None when the video is used whole."""

    video_id: str
    path: str
    start_s: float | None = None
    end_s: float | None = None


class VideoFrame(NamedTuple):
    video_id: str
    frame_index: int  # index in the (trimmed) clip, as fer counts it
    frame: np.ndarray  # (H, W, 3) uint8 BGR, as cv2 decodes it
    is_last: bool  # the video's last sampled frame: its output can be written
    faces: Any = None  # frame_fn's result for this frame, when the dataset has a frame_fn


# ---- frame sampling (pure)


def frame_stride(window_frames: int, scheme: str) -> int:
    """Step between analysed frames. t300 uses floor(count / 300) like the paper; clips shorter than 300 frames
    would give stride 0 (fer then fails with modulo by zero), so they are clamped to every frame."""
    if scheme == "t300":
        return max(1, window_frames // T300_TARGET_FRAMES)
    if scheme == "f50":
        return F50_STRIDE
    raise ConfigError(f"unknown data.scheme={scheme!r}; valid: {', '.join(SCHEMES)}")


def sample_frame_indices(num_frames: int, scheme: str, start_frame: int = 0, end_frame: int | None = None) -> list[int]:
    """Frame indices (of the whole video) analysed in the window [start_frame, end_frame).

    The window stands for the moviepy-trimmed clip the authors analysed: its frame 0 is `start_frame`, and
    the stride is computed from the window's length, not the whole video's.
    """
    end = num_frames if end_frame is None else min(end_frame, num_frames)
    start = max(0, start_frame)
    if end <= start:
        return []
    return list(range(start, end, frame_stride(end - start, scheme)))


def trim_window(start_s: float | None, end_s: float | None, fps: float, num_frames: int) -> tuple[int, int]:
    """Manifest [start, end] seconds -> [start_frame, end_frame) of the video, clamped to its frames."""
    start = 0 if start_s is None else max(0, round(start_s * fps))
    end = num_frames if end_s is None else min(num_frames, round(end_s * fps))
    return start, end


# ---- manifest and video list


def read_manifest(path: str | Path) -> pd.DataFrame:
    """The URL list, one row per video; the row index is the video id."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"manifest not found: {path}. Set data.manifest to a CSV with columns "
            f"{', '.join(MANIFEST_COLUMNS)} (the yt-urls.csv layout), or data.manifest=null"
        )
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read manifest {path} ({exc}); expected a CSV with a header row") from None
    missing = [c for c in ("crop", "start", "end") if c not in table.columns]
    if missing:
        raise DataError(
            f"manifest {path} lacks column(s) {missing}; expected the yt-urls.csv layout "
            f"({', '.join(MANIFEST_COLUMNS)})"
        )
    return table


def _find_video(videos_dir: Path, stem: str, extensions: Sequence[str]) -> Path:
    for ext in extensions:
        candidate = videos_dir / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    # Not found: keep a path anyway, so the worker that owns this video reports it as failed, by name.
    return videos_dir / f"{stem}{extensions[0]}"


def _seconds(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def list_video_jobs(cfg: VideoFramesDataConfig) -> list[VideoJob]:
    """Every video to process, in a fixed order (the same on every rank, which the sharding relies on)."""
    if not cfg.videos_dir:
        raise DataError(
            "data.videos_dir is not set: set data.videos_dir=/path/to/videos "
            "(files named <manifest row>.mp4, or any video files when data.manifest=null)"
        )
    videos_dir = Path(cfg.videos_dir)
    if not videos_dir.is_dir():
        raise DataError(f"videos folder not found: {videos_dir}; fix data.videos_dir")
    extensions = [e.lower() for e in cfg.video_extensions]
    if cfg.manifest is None:
        files = sorted(p for p in videos_dir.iterdir() if p.is_file() and p.suffix.lower() in extensions)
        if not files:
            raise DataError(
                f"{videos_dir} holds no video files ({', '.join(extensions)}); fix data.videos_dir or set data.manifest"
            )
        return [VideoJob(p.stem, str(p)) for p in files]
    jobs = []
    for i, row in read_manifest(cfg.manifest).iterrows():
        # crop is "yes"/"no" (one row is empty: untrimmed); only "yes" rows carry a [start, end] window.
        trimmed = str(row["crop"]).strip().lower() == "yes"
        start, end = (_seconds(row["start"]), _seconds(row["end"])) if trimmed else (None, None)
        jobs.append(VideoJob(str(i), str(_find_video(videos_dir, str(i), extensions)), start, end))
    return jobs


# ---- decoding


def count_frames(path: str) -> int:
    """Frames that actually decode; grab() skips the colour conversion of read(), so this is the cheap way."""
    cap = cv2.VideoCapture(path)
    try:
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


def decode_sampled_frames(
    job: VideoJob, scheme: str, exact_frame_count: bool = False, min_decoded_fraction: float = 0.9
) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index in the clip, BGR frame) for each sampled frame of one video.

    Sequential grab/retrieve rather than seeking: CAP_PROP_POS_FRAMES seeks snap to keyframes on some codecs
    and would silently return other frames. Raises DataError when the file cannot be opened or yields nothing.
    """
    cap = cv2.VideoCapture(job.path)
    try:
        if not cap.isOpened():
            raise DataError(f"cannot open video {job.path}")
        header_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = cap.get(cv2.CAP_PROP_FPS)
        num_frames = count_frames(job.path) if exact_frame_count or header_count <= 0 else header_count
        if num_frames <= 0:
            raise DataError(f"video {job.path} has no decodable frames")
        trimmed = job.start_s is not None or job.end_s is not None
        if trimmed and not fps > 0:
            raise DataError(f"video {job.path} reports no fps, so its manifest [start, end] seconds cannot be applied")
        start, end = trim_window(job.start_s, job.end_s, fps, num_frames) if trimmed else (0, num_frames)
        if end <= start:
            raise DataError(
                f"video {job.path}: trim window [{job.start_s}, {job.end_s}] s is empty "
                f"({num_frames} frames at {fps:.3g} fps)"
            )
        stride = frame_stride(end - start, scheme)
        # Untrimmed, read to the end of the stream as fer does: the header count may be short of the real one.
        stop = end if trimmed else None
        index, yielded = 0, 0
        while stop is None or index < stop:
            if not cap.grab():
                break
            if index >= start and (index - start) % stride == 0:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise DataError(f"video {job.path}: frame {index} does not decode")
                yielded += 1
                yield index - start, frame
            index += 1
        if yielded == 0:
            raise DataError(f"video {job.path} yielded no frames (header says {header_count})")
        if index < min_decoded_fraction * end:
            raise DataError(
                f"video {job.path} ends at frame {index} of the {end} expected; truncated? "
                "re-download it, or lower data.min_decoded_fraction"
            )
    finally:
        cap.release()


# ---- outputs


def output_path(output_dir: str | Path, video_id: str, scheme: str) -> Path:
    """Named like the released per-frame CSVs, `<video>-<scheme>.csv`."""
    return Path(output_dir) / f"{video_id}-{scheme}.csv"


def write_video_output_atomically(path: str | Path, dataframe: pd.DataFrame) -> None:
    """Write a CSV so that `path` is either absent or complete: resume trusts any file it finds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, so os.replace is a rename within one filesystem (atomic); the dot-prefix and .tmp
    # suffix keep a leftover from a killed run from looking like an output.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            dataframe.to_csv(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_failed_video(output_dir: str | Path | None, path: str, reason: str) -> None:
    """Log the failure and append `path<TAB>reason` to `<output_dir>/failed.txt`.

    One O_APPEND write per line, so lines from several workers and ranks do not interleave.
    """
    log.warning("skipping video %s: %s", path, reason)
    if output_dir is None:
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    line = f"{path}\t{' '.join(reason.split())}\n".encode()
    fd = os.open(Path(output_dir) / FAILED_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


# ---- dataset


def _dist_rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class VideoFramesDataset(IterableDataset):
    """Yields `VideoFrame`s of the videos owned by this rank and DataLoader worker.

    rank/world_size default to torch.distributed's (resolved here, in the main process: workers started by
    spawn do not inherit the process group). Lightning's DistributedSampler does not apply to an
    IterableDataset, hence the sharding by hand.
    """

    def __init__(
        self,
        jobs: Sequence[VideoJob],
        scheme: str = "t300",
        output_dir: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        exact_frame_count: bool = False,
        min_decoded_fraction: float = 0.9,
        frame_fn: Callable[[np.ndarray, Any], Any] | None = None,
        split_frames: bool = False,
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        self.frame_fn = frame_fn
        frame_stride(T300_TARGET_FRAMES, scheme)  # fail on an unknown scheme now, not inside a worker
        self.jobs = list(jobs)
        self.scheme = scheme
        self.output_dir = output_dir
        if rank is None or world_size is None:
            rank, world_size = _dist_rank_world()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.rank, self.world_size = rank, world_size
        self.exact_frame_count = exact_frame_count
        self.min_decoded_fraction = min_decoded_fraction
        # Filled in the process that iterates: with num_workers > 0 that is a worker's copy, so failed.txt
        # (needs output_dir) is the record that survives; this list serves num_workers=0 and tests.
        self.failed_videos: list[str] = []
        # Split by frames, every worker must walk the same videos and number the same chunks. Which videos are done
        # is therefore decided once, here in the main process: checked in the workers, a video written while one
        # worker is still behind would be skipped by that worker alone.
        self.split_frames = split_frames
        self.batch_size = batch_size
        if split_frames and batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be >= 1 to split frames into chunks")
        self._todo = [j for j in self.shard_jobs() if not self.is_done(j)] if split_frames else None

    def shard_jobs(self, worker_id: int = 0, num_workers: int = 1) -> list[VideoJob]:
        """This (rank, worker)'s videos: round-robin over rank-major shards, so each video has one owner."""
        shard = self.rank * num_workers + worker_id
        return self.jobs[shard :: self.world_size * num_workers]

    def is_done(self, job: VideoJob) -> bool:
        return self.output_dir is not None and output_path(self.output_dir, job.video_id, self.scheme).is_file()

    def __iter__(self) -> Iterator[VideoFrame] | Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.split_frames:
            yield from self._chunk_batches(worker_id, num_workers)
            return
        for job in self.shard_jobs(worker_id, num_workers):
            if self.is_done(job):
                continue
            yield from self._frames(job)

    def _chunk_batches(self, worker_id: int, num_workers: int) -> Iterator[dict[str, Any]]:
        """This worker's chunks of the rank's sampled frames, one collated batch each, in chunk order.

        Chunk c (numbered across the rank's videos) is worker c % num_workers's. Every worker decodes and
        converts every sampled frame, so all of them meet a bad frame at the same place and keep numbering the
        same chunks; exactly one batch per chunk is what keeps the DataLoader's round-robin in frame order.
        """
        size, first_chunk = self.batch_size, 0  # first_chunk: the number of the current video's chunk 0
        for job in self._todo:
            chunk: list[VideoFrame] = []
            sampled = 0
            try:
                for index, frame in decode_sampled_frames(
                    job, self.scheme, self.exact_frame_count, self.min_decoded_fraction
                ):
                    number = first_chunk + sampled // size
                    if sampled % size == 0 and chunk:  # a new chunk starts: the previous one is complete
                        yield collate_frames(chunk)
                        chunk = []
                    if number % num_workers == worker_id:
                        chunk.append(self._item((job.video_id, number), job.video_id, index, frame))
                    sampled += 1
            except (DataError, cv2.error, OSError) as exc:
                if worker_id == 0:  # every worker meets the failure; one records it
                    self.failed_videos.append(job.path)
                    record_failed_video(self.output_dir, job.path, str(exc))
                if chunk:  # without is_last: the video gets no output and a resumed run retries it
                    yield collate_frames(chunk)
            else:
                if chunk:  # the video's last chunk is this worker's
                    chunk[-1] = chunk[-1]._replace(is_last=True)
                    yield collate_frames(chunk)
            first_chunk += -(-sampled // size)

    def _frames(self, job: VideoJob) -> Iterator[VideoFrame]:
        # One frame of look-ahead: the frame count is unreliable, so a frame is known to be the last only once
        # the next read fails. A video that fails midway never gets its is_last frame, so no output is written
        # for it and a resumed run tries it again.
        pending: VideoFrame | None = None
        try:
            for index, frame in decode_sampled_frames(
                job, self.scheme, self.exact_frame_count, self.min_decoded_fraction
            ):
                if pending is not None:
                    yield pending
                pending = self._item(job.video_id, job.video_id, index, frame)
        except (DataError, cv2.error, OSError) as exc:
            self.failed_videos.append(job.path)
            record_failed_video(self.output_dir, job.path, str(exc))
            return
        if pending is not None:
            yield pending._replace(is_last=True)

    def _item(self, segment: Any, video_id: str, index: int, frame: np.ndarray) -> VideoFrame:
        if self.frame_fn is None:
            return VideoFrame(video_id, index, frame, False)
        faces = self.frame_fn(frame, segment)
        return VideoFrame(video_id, index, getattr(faces, "frame", frame), False, faces)


def collate_frames(items: list[VideoFrame]) -> dict[str, Any]:
    """Frames stay a list: videos differ in size, and the face detector works at each frame's own resolution."""
    batch = {
        "video_id": [it.video_id for it in items],
        "frame_index": torch.tensor([it.frame_index for it in items], dtype=torch.long),
        "frame": [it.frame for it in items],  # each (H, W, 3) uint8 BGR, or None when frame_fn dropped it
        "is_last": torch.tensor([it.is_last for it in items], dtype=torch.bool),
    }
    if items and items[0].faces is not None:
        batch["faces"] = [it.faces for it in items]
    return batch


def _collated(batch: dict[str, Any]) -> dict[str, Any]:
    """The loader's collate_fn for chunk batches, which need none (its default would turn arrays to tensors)."""
    return batch


class VideoFramesDataModule(MethodDataModule):
    # Per-frame work for the loader workers, set by the method before the loader is built (face_emotion: the
    # face finder); None: batches carry the decoded frames only.
    frame_fn: Callable[[np.ndarray, Any], Any] | None = None

    def check(self) -> None:
        """Fail within seconds if the videos or manifest are absent, before any model is built."""
        frame_stride(T300_TARGET_FRAMES, self.cfg.scheme)
        jobs = list_video_jobs(self.cfg)
        if not any(Path(j.path).is_file() for j in jobs):
            raise DataError(
                f"none of the {len(jobs)} manifest videos is in {self.cfg.videos_dir} (expected files "
                f"named <row>{self.cfg.video_extensions[0]}); fix data.videos_dir or data.manifest"
            )

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return _dist_rank_world()

    def split_frames(self, rank_videos: int) -> bool:
        """`data.worker_split` resolved for a rank with this many videos (auto: frames when workers would idle)."""
        split = WorkerSplit(self.cfg.worker_split)
        if split == WorkerSplit.auto:
            return self.cfg.num_workers > 1 and rank_videos < self.cfg.num_workers
        return split == WorkerSplit.frames

    def predict_dataset(self) -> VideoFramesDataset:
        rank, world = self._rank_world()
        cfg = self.cfg
        jobs = list_video_jobs(cfg)
        return VideoFramesDataset(
            jobs,
            cfg.scheme,
            cfg.output_dir,
            rank,
            world,
            cfg.exact_frame_count,
            cfg.min_decoded_fraction,
            self.frame_fn,
            split_frames=self.split_frames(len(jobs[rank::world])),
            batch_size=cfg.batch_size_per_device,
        )

    def predict_dataloader(self) -> DataLoader:
        workers = self.cfg.num_workers
        # One cv2 thread per process: multi-threaded Haar returns a frame's faces in a run-dependent order (two runs
        # of fer itself differ), one thread makes the face index of every CSV row reproducible. Workers share the
        # cores (torch's loader already gives them one torch thread). Set here, before the workers fork:
        # cv2.setNumThreads in a forked child waits forever on the parent's thread pool.
        cv2.setNumThreads(1)
        dataset = self.predict_dataset()
        if dataset.split_frames:  # the workers yield whole chunks, already collated
            return DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_collated, pin_memory=False)
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size_per_device,
            num_workers=workers,
            collate_fn=collate_frames,
            pin_memory=False,
        )
