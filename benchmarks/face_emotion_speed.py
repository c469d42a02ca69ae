"""CPU throughput of face_emotion: the emotion CNN batched vs one face per forward, and the whole pipeline.

1. Emotion model alone: faces/s with one face per forward (fer's `detect_emotions` on a one-face frame) vs
   `--faces` faces per forward. The inputs are real crops: the astronaut face (scikit-image) shifted by a few
   pixels. Rounds alternate the two and `ratio` is the median of per-round ratios (paired, so load drift cancels).
2. Whole pipeline on a temporary MJPG video of the astronaut photo: decode + Haar detection + preprocessing +
   model (+ building fer's rows). "fer's way" classifies each frame's faces as soon as they are found;
   face_emotion's `predict_step` gets `--batch` frames and runs the model once. Frames/s over the whole video.
3. `--haar-threads`: fer's Haar call alone on the frames of face_emotion_vs_fer.py's four test videos, one cv2
   thread (what each face_emotion loader worker uses) against all cores (what fer uses), alternated rounds.
   Two one-thread workers can beat fer's threaded Haar by at most 2 / (that speed-up) before any other cost.

    python benchmarks/face_emotion_speed.py [--faces 64] [--batch 32] [--frames 120] [--repeats 15]
    python benchmarks/face_emotion_speed.py --haar-threads [--frames 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages, not an installed copy

import cv2
import numpy as np
import skimage.data
import torch

from datamodules.video_frames import (
    VideoFrame,
    VideoFramesDataset,
    VideoJob,
    collate_frames,
    decode_sampled_frames,
)
from lightning_modules.face_emotion.config import FaceEmotionConfig
from lightning_modules.face_emotion.emotion_net import MiniXception, fold_batchnorm, load_fer_model
from lightning_modules.face_emotion.face_detect import MIN_FACE_SIZE, MIN_NEIGHBORS, SCALE_FACTOR, detect_faces
from lightning_modules.face_emotion.module import FaceEmotionModule, fer_row
from lightning_modules.face_emotion.preprocess import preprocess_faces, to_gray
from tenfold.config import to_plain


def astronaut_bgr() -> np.ndarray:
    return np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])


def face_crops(n: int) -> torch.Tensor:
    """(n, 1, 64, 64) real face crops: the astronaut's Haar box shifted by up to 3 px."""
    gray = to_gray(astronaut_bgr())
    ((x, y, w, h),) = detect_faces(gray)
    rng = np.random.default_rng(0)
    boxes = [(x + dx, y + dy, w, h) for dx, dy in rng.integers(-3, 4, size=(n, 2))]
    return preprocess_faces(gray, boxes)


@torch.inference_mode()
def model_rounds(net: MiniXception, faces: torch.Tensor, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per face: one face per forward, and all faces in one forward; `repeats` paired rounds."""
    one, batched = [], []
    net(faces[:1]), net(faces)  # warm-up: first calls allocate
    for _ in range(repeats):
        t0 = time.perf_counter()
        for face in faces.split(1):
            net(face)
        t1 = time.perf_counter()
        net(faces)
        t2 = time.perf_counter()
        one.append((t1 - t0) / len(faces))
        batched.append((t2 - t1) / len(faces))
    return one, batched


@torch.inference_mode()
def batch_size_rounds(
    raw: MiniXception, folded: MiniXception, channels_last: MiniXception, faces: torch.Tensor, repeats: int
) -> list:
    """Faces/s at 64 and 256 faces per call: unfolded in one forward (before), folded in chunks, and that with
    channels-last weights (what face_emotion runs)."""
    variants = {
        "64 faces, unfolded, one forward": (raw, 64, 10**6),
        "256 faces, unfolded, one forward": (raw, 256, 10**6),
        "64 faces, folded BN, chunks of 32": (folded, 64, 32),
        "256 faces, folded BN, chunks of 32": (folded, 256, 32),
        "64 faces, folded, chunks, channels-last": (channels_last, 64, 32),
        "256 faces, folded, chunks, channels-last": (channels_last, 256, 32),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved, so load drift hits every variant alike
        for name, (net, n, chunk) in variants.items():
            net.chunk = chunk
            net(faces[:n])  # warm-up of this shape
            t0 = time.perf_counter()
            net(faces[:n])
            seconds[name].append((time.perf_counter() - t0) / n)
    raw.chunk = folded.chunk = channels_last.chunk = MiniXception.chunk
    base = seconds["64 faces, unfolded, one forward"]
    return [
        (name, 1 / statistics.median(s), statistics.median(b / x for b, x in zip(base, s)))
        for name, s in seconds.items()
    ]


def write_video(path: Path, frames: int) -> None:
    frame = astronaut_bgr()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, frame.shape[1::-1])
    for _ in range(frames):
        writer.write(frame)
    writer.release()


@torch.inference_mode()
def pipeline_fer_way(job: VideoJob, net: MiniXception) -> float:
    """Seconds for the whole video, classifying each frame's faces as soon as they are detected."""
    t0 = time.perf_counter()
    rows = []
    for _, frame in decode_sampled_frames(job, "t300"):
        gray = to_gray(frame)
        boxes = detect_faces(gray)
        if len(boxes):
            rows.append(fer_row(boxes, net(preprocess_faces(gray, boxes)).numpy(), 2))
    return time.perf_counter() - t0


@torch.inference_mode()
def pipeline_batched(job: VideoJob, module: FaceEmotionModule, batch: int) -> float:
    """Seconds for the whole video through `predict_step`, `batch` frames at a time (writes its CSV)."""
    t0 = time.perf_counter()
    frames = list(decode_sampled_frames(job, "t300"))
    items = [VideoFrame(job.video_id, i, f, k == len(frames) - 1) for k, (i, f) in enumerate(frames)]
    for start in range(0, len(items), batch):
        module.predict_step(collate_frames(items[start : start + batch]), start // batch)
    return time.perf_counter() - t0


def haar_thread_scaling(frames: int, repeats: int) -> None:
    """Frames/s of fer's full-frame Haar call with one cv2 thread and with all cores, alternated; and how the
    datamodule's by-video split shares the one-thread cost between two loader workers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from face_emotion_vs_fer import build_videos  # the vs-fer benchmark's test videos

    cores = cv2.getNumberOfCPUs()
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [VideoJob(v.stem, str(v)) for v in sorted(build_videos(Path(tmp), frames))]  # list_video_jobs' order
        grays = {job.video_id: [to_gray(f) for _, f in decode_sampled_frames(job, "t300")] for job in jobs}
    rates: dict[int, list[float]] = {1: [], cores: []}
    one_thread_ms: dict[str, list[float]] = {video: [] for video in grays}
    for _ in range(repeats):
        for threads in rates:
            cv2.setNumThreads(threads)
            total = 0.0
            for video, video_grays in grays.items():
                t0 = time.perf_counter()
                for gray in video_grays:
                    detect_faces(gray)
                seconds = time.perf_counter() - t0
                total += seconds
                if threads == 1:
                    one_thread_ms[video].append(seconds / len(video_grays) * 1e3)
            rates[threads].append(sum(map(len, grays.values())) / total)
    speedup = statistics.median(b / a for a, b in zip(rates[1], rates[cores]))
    height, width = next(iter(grays.values()))[0].shape
    print(
        f"Haar (scaleFactor {SCALE_FACTOR}, minNeighbors {MIN_NEIGHBORS}, minSize {MIN_FACE_SIZE}) on "
        f"{sum(map(len, grays.values()))} frames {width}x{height}, {repeats} rounds"
    )
    print(f"  1 cv2 thread      {statistics.median(rates[1]):6.1f} frames/s")
    print(f"  {cores} cv2 threads     {statistics.median(rates[cores]):6.1f} frames/s  ({speedup:.2f}x one thread)")
    print(f"  ceiling of {cores} one-thread workers against fer's threaded Haar: {cores / speedup:.2f}x")
    ms = {video: statistics.median(values) for video, values in one_thread_ms.items()}
    print("  one thread, ms/frame: " + ", ".join(f"{video} {value:.1f}" for video, value in ms.items()))
    dataset = VideoFramesDataset(jobs, rank=0, world_size=1)
    loads = [sum(ms[job.video_id] for job in dataset.shard_jobs(w, 2)) for w in range(2)]
    print(f"  by-video split over 2 loader workers: {loads[0]:.0f} : {loads[1]:.0f} ms per frame of each video")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=64, help="faces per batched forward")
    parser.add_argument("--batch", type=int, default=32, help="frames per predict_step batch")
    parser.add_argument("--frames", type=int, default=120, help="frames in the benchmark video")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--model-only", action="store_true", help="only the emotion model (batch sizes)")
    parser.add_argument("--haar-threads", action="store_true", help="only Haar, one cv2 thread vs all cores")
    args = parser.parse_args()
    if args.haar_threads:
        haar_thread_scaling(args.frames, args.repeats)
        return

    raw = load_fer_model()
    folded = fold_batchnorm(raw)
    net = fold_batchnorm(raw).to(memory_format=torch.channels_last)  # what face_emotion runs
    one, batched = model_rounds(net, face_crops(args.faces), args.repeats)
    model_ratio = statistics.median(a / b for a, b in zip(one, batched))
    batch_rows = batch_size_rounds(raw, folded, net, face_crops(256), max(3, args.repeats // 3))
    if args.model_only:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        print("emotion model by batch size (faces/s; ratio vs 64 faces, unfolded, one forward)")
        for name, value, ratio in batch_rows:
            print(f"{name:46s} {value:9.1f} faces/s {ratio:6.2f}x")
        return

    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "astronaut.avi"
        write_video(video, args.frames)
        job = VideoJob("astronaut", str(video))
        cfg = FaceEmotionConfig()
        cfg.data.output_dir = str(Path(tmp) / "out")
        module = FaceEmotionModule(config=to_plain(cfg)).eval()
        pipeline_fer_way(job, net), pipeline_batched(job, module, args.batch)  # warm-up
        fer_s, batch_s = [], []
        for _ in range(max(3, args.repeats // 5)):
            fer_s.append(pipeline_fer_way(job, net))
            batch_s.append(pipeline_batched(job, module, args.batch))
        pipe_ratio = statistics.median(a / b for a, b in zip(fer_s, batch_s))

    rows = [
        ("emotion model, 1 face / forward (fer)", "faces/s", 1 / statistics.median(one), 1.0),
        (f"emotion model, {args.faces} faces / forward", "faces/s", 1 / statistics.median(batched), model_ratio),
        ("pipeline, model per frame (fer)", "frames/s", args.frames / statistics.median(fer_s), 1.0),
        (
            f"pipeline, predict_step {args.batch} frames",
            "frames/s",
            args.frames / statistics.median(batch_s),
            pipe_ratio,
        ),
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, video {args.frames} frames 512x512 "
        f"(1 face each), {args.repeats} rounds"
    )
    print(f"{'what':46s} {'throughput':>16s} {'ratio':>7s}")
    for name, unit, value, ratio in rows:
        print(f"{name:46s} {value:9.1f} {unit:>6s} {ratio:6.2f}x")
    print("\nemotion model by batch size (faces/s; ratio vs 64 faces, unfolded, one forward)")
    for name, value, ratio in batch_rows:
        print(f"{name:46s} {value:9.1f} faces/s {ratio:6.2f}x")


if __name__ == "__main__":
    main()
