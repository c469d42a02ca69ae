"""face_emotion against fer itself: the same videos, whole commands, alternated rounds, ratios and agreement.

    python benchmarks/face_emotion_vs_fer.py [--fer-python /work/venvs/fer/bin/python] [--frames 100] [--rounds 2]
        [--one-video] [--modes "fer tflite,tenfold workers"]

fer needs TensorFlow, which the project never installs: it runs from its own venv (`--fer-python`; setup in
benchmarks/README.md). The test videos are generated here from images that ship with scikit-image (the
astronaut photo, 100 LFW faces): several people and expressions, moving, up to three faces per frame, and frames
and a whole video without a face. Nothing is downloaded. `--one-video` joins the four into one video, the case of
a user scoring one long recording (the loader workers then split its frames).

Per round, in alternating order, each pipeline runs as a fresh process on (a) all the videos and (b) a one-frame
video: (b)'s wall is the start-up (import, model load, first frame, teardown), and steady frames/s is
frames / (wall(a) - least wall(b) over the rounds). Each pipeline first runs once untimed (cold disk caches).
Peak RSS is the process tree's (loader workers included). Ratios are medians of per-round ratios against fer's
default (TFLite) pipeline, so load drift between rounds cancels.

Agreement is per frame against fer's Keras model (the paper's), which face_emotion's default must equal: faces
per frame, faces found / missed, box IoU of matched faces, emotion argmax agreement, max score difference, and
the largest change of a video's mean score (mean over the frames and faces of each emotion: what the paper's
statistics are computed from).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SIZE = (640, 480)  # (width, height): YouTube's 480p
FER_SETUP = (
    "python3.11 -m venv /work/venvs/fer && /work/venvs/fer/bin/pip install tensorflow-cpu "
    "'opencv-python-headless<5' pandas pillow tqdm requests 'setuptools<81' && "
    "/work/venvs/fer/bin/pip install --no-deps fer==25.10.3"
)

# Runs inside the fer venv: fer's own Video.analyze on each video, every frame (t300's stride for < 600 frames),
# per-frame results (with the frame index fer's CSV drops) to JSON and fer's to_pandas() CSV beside them.
FER_DRIVER = r"""
import json, sys
from pathlib import Path
import cv2
# fer's Video.analyze calls cv2.waitKey / destroyAllWindows even with display=False; headless OpenCV has no GUI.
cv2.waitKey, cv2.destroyAllWindows = (lambda *a: -1), (lambda *a: None)
from fer.fer import FER
from fer.classes import Video
mode, out = sys.argv[1], Path(sys.argv[2])
detector = FER(use_tflite=(mode == "tflite"))
detect = detector.detect_emotions
for path in sys.argv[3:]:
    frames = []
    def record(image, face_rectangles=None):
        faces = detect(image, face_rectangles)
        frames.append([{"box": [int(v) for v in f["box"]], "emotions": f["emotions"]} for f in faces])
        return faces
    detector.detect_emotions = record
    video = Video(path, outdir=str(out / "fer-video"), first_face_only=False)
    data = video.analyze(detector, display=False, frequency=1, save_frames=False, save_video=False,
                         annotate_frames=False, output="pandas")
    stem = Path(path).stem
    video.to_pandas(data).to_csv(out / f"{stem}.csv")
    (out / f"{stem}.json").write_text(json.dumps(frames))
"""

TENFOLD_MODES = {
    # name: train.py overrides
    "tenfold 1 process": ["data.num_workers=0"],
    "tenfold workers": ["data.num_workers=2"],  # worker_split=auto: by video when there are >= 2 videos
    "tenfold workers by frames": ["data.num_workers=2", "data.worker_split=frames"],
    "tenfold fast s0.5": ["data.num_workers=2", "model.detect_scale=0.5"],
    "tenfold fast s0.5 k5": ["data.num_workers=2", "model.detect_scale=0.5", "model.track_every=5"],
}


# ---- test videos


def _faces() -> tuple[np.ndarray, list[np.ndarray]]:
    import skimage.data

    astronaut = np.ascontiguousarray(skimage.data.astronaut()[..., ::-1])
    lfw = (skimage.data.lfw_subset()[:100] * 255).astype(np.uint8)  # the first 100 are faces
    # 25 px crops, tight on the face: upsampled and framed by a grey border so Haar sees a whole head.
    faces = []
    for face in lfw:
        big = cv2.resize(face, (120, 120), interpolation=cv2.INTER_CUBIC)
        faces.append(
            cv2.cvtColor(cv2.copyMakeBorder(big, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=110), cv2.COLOR_GRAY2BGR)
        )
    return astronaut, faces


def _paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    h, w = image.shape[:2]
    x, y = int(np.clip(x, 0, canvas.shape[1] - w)), int(np.clip(y, 0, canvas.shape[0] - h))
    canvas[y : y + h, x : x + w] = image


def build_videos(folder: Path, frames: int) -> list[Path]:
    """Four MJPG videos of `frames` frames at 640x480: one/two/three faces moving, and one without a face."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    astronaut, lfw = _faces()
    background = cv2.resize(np.ascontiguousarray(skimage.data.coffee()[..., ::-1]), SIZE)
    blur = cv2.GaussianBlur(background, (0, 0), 6)
    small_astronaut = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    tiny_astronaut = cv2.resize(astronaut, (220, 220), interpolation=cv2.INTER_AREA)

    def astronaut_pan(i: int) -> np.ndarray:  # one face sliding sideways; every 10th frame cut away
        canvas = blur.copy()
        if i % 10 != 5:
            _paste(canvas, small_astronaut, 20 + 320 * i / max(1, frames - 1), 90 + 20 * np.sin(i / 7))
        return canvas

    def two_people(i: int) -> np.ndarray:  # two faces, a new pair of people every 20 frames, none in 40-49
        canvas = blur.copy()
        if not 40 <= i < 50:
            pair = (i // 20) * 2
            _paste(canvas, lfw[pair % 100], 60 + 2 * i % 120, 120 + 30 * np.sin(i / 9))
            _paste(canvas, lfw[(pair + 1) % 100], 400 - i % 80, 160 + 25 * np.cos(i / 11))
        return canvas

    def three_faces(i: int) -> np.ndarray:  # the astronaut and two people circling
        canvas = blur.copy()
        _paste(canvas, tiny_astronaut, 30 + 40 * np.cos(i / 10), 40 + 30 * np.sin(i / 10))
        _paste(canvas, lfw[(50 + i // 30) % 100], 300 + 30 * np.sin(i / 8), 60)
        _paste(canvas, lfw[(70 + i // 30) % 100], 420, 290 + 20 * np.cos(i / 6))
        return canvas

    def no_face(i: int) -> np.ndarray:  # a panning still life
        return np.roll(background, 3 * i, axis=1)

    paths = []
    for name, draw in (
        ("astronaut_pan", astronaut_pan),
        ("two_people", two_people),
        ("three_faces", three_faces),
        ("no_face", no_face),
    ):
        paths.append(_write(folder / f"{name}.avi", [draw(i) for i in range(frames)]))
    return paths


def _read(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame)
    capture.release()
    return frames


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, SIZE)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


# ---- running a command


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB of the process tree, stderr) of one command."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}
    )
    peak, err = [0.0], []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
        except psutil.Error:
            pass
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{''.join(err)[-2000:]}")
    return wall, peak[0], "".join(err)


def fer_command(fer_python: str, mode: str, out: Path, videos: list[Path], driver: Path) -> list[str]:
    return [fer_python, str(driver), mode, str(out), *map(str, videos)]


def tenfold_command(videos_dir: Path, out: Path, root: Path, overrides: list[str]) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "--config",
        "configs/examples/face_emotion_demo.yaml",
        f"data.videos_dir={videos_dir}",
        f"data.output_dir={out}",
        f"run.root={root}",
        "logger=none",
        "data.batch_size_per_device=32",
        *overrides,
    ]


# ---- agreement


def tenfold_frames(csv: Path, frames: int) -> list[list[dict]]:
    """A face_emotion CSV as fer-style per-frame face lists (faceless frames: empty lists)."""
    result: list[list[dict]] = [[] for _ in range(frames)]
    if csv.read_text().strip() == '""':
        return result
    table = pd.read_csv(csv, index_col=0)
    for index, row in table.iterrows():
        faces, i = [], 0
        while f"box{i}" in row and isinstance(row[f"box{i}"], str):
            faces.append(
                {"box": ast.literal_eval(row[f"box{i}"]), "emotions": {e: float(row[f"{e}{i}"]) for e in EMOTIONS}}
            )
            i += 1
        result[int(index)] = faces
    return result


def agreement(reference: dict[str, list[list[dict]]], other: dict[str, list[list[dict]]]) -> dict[str, float]:
    from lightning_modules.face_emotion.frame_faces import box_iou

    frames = same_count = found = missed = extra = argmax_same = 0
    ious, max_diff, mean_change = [], 0.0, 0.0
    for video, ref_frames in reference.items():
        ref_scores, oth_scores = [], []
        for ref, oth in zip(ref_frames, other[video]):
            frames += 1
            same_count += len(ref) == len(oth)
            ref_scores += [[f["emotions"][e] for e in EMOTIONS] for f in ref]
            oth_scores += [[f["emotions"][e] for e in EMOTIONS] for f in oth]
            if not ref or not oth:
                missed += len(ref)
                extra += len(oth)
                continue
            iou = box_iou(np.array([f["box"] for f in ref]), np.array([f["box"] for f in oth]))
            used = set()
            for r in np.argsort(-iou.max(axis=1)):  # greedy matching, best pairs first
                o = next((o for o in np.argsort(-iou[r]) if o not in used and iou[r, o] > 0.3), None)
                if o is None:
                    missed += 1
                    continue
                used.add(o)
                found += 1
                ious.append(iou[r, o])
                a = np.array([ref[r]["emotions"][e] for e in EMOTIONS])
                b = np.array([oth[o]["emotions"][e] for e in EMOTIONS])
                argmax_same += a.argmax() == b.argmax()
                max_diff = max(max_diff, float(np.abs(a - b).max()))
            extra += len(oth) - len(used)
        if ref_scores and oth_scores:
            change = np.abs(np.mean(ref_scores, axis=0) - np.mean(oth_scores, axis=0)).max()
            mean_change = max(mean_change, float(change))
    total = found + missed
    return {
        "faces/frame same": same_count / max(frames, 1),
        "found": found,
        "missed": missed,
        "extra": extra,
        "IoU mean": float(np.mean(ious)) if ious else float("nan"),
        "IoU min": float(np.min(ious)) if ious else float("nan"),
        "argmax same": argmax_same / max(found, 1),
        "max |score diff|": max_diff,
        "max video mean change": mean_change,
        "recall": found / max(total, 1),
    }


def _cells(csv: Path) -> pd.DataFrame:
    """A per-video CSV's cells as text, boxes as int lists: fer 25.10's Haar path writes numpy-array boxes
    ("[ 83 136 113 113]"), the fer the authors ran (and face_emotion) lists ("[83, 136, 113, 113]")."""
    table = pd.read_csv(csv, index_col=0, dtype=str).reset_index(drop=True)
    for column in [c for c in table.columns if c.startswith("box")]:
        table[column] = table[column].map(
            lambda v: v if pd.isna(v) else str([int(x) for x in v.strip("[]").replace(",", " ").split()])
        )
    return table


def cells_identical(fer_csv: Path, tenfold_csv: Path) -> bool:
    """fer's to_pandas CSV and face_emotion's, index aside (fer numbers rows, face_emotion names frames), each
    row's faces taken in sorted order: multi-threaded Haar (fer's cv2 default) returns faces in a run-dependent
    order, so two runs of fer itself differ there."""
    a, b = fer_csv.read_text().strip(), tenfold_csv.read_text().strip()
    if a == '""' or b == '""':
        return a == b
    return _sorted_faces(_cells(fer_csv)) == _sorted_faces(_cells(tenfold_csv))


def _sorted_faces(table: pd.DataFrame) -> list[list[tuple]]:
    faces_per_row = len([c for c in table.columns if c.startswith("box")])
    rows = []
    for _, row in table.iterrows():
        faces = [tuple(row[[f"box{i}", *(f"{e}{i}" for e in EMOTIONS)]].fillna("")) for i in range(faces_per_row)]
        rows.append(sorted(face for face in faces if face[0]))
    return rows


# ---- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fer-python",
        default="/work/venvs/fer/bin/python",
        help="python of a venv with tensorflow-cpu, opencv-python-headless<5 and fer --no-deps",
    )
    parser.add_argument("--frames", type=int, default=100, help="frames per test video (4 videos)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one-video", action="store_true", help="join the four test videos into one")
    parser.add_argument(
        "--modes",
        default=",".join(["fer tflite", "fer keras", *TENFOLD_MODES]),
        help="comma-separated subset of the pipelines",
    )
    parser.add_argument("--keep", type=Path, help="keep the videos and outputs here")
    args = parser.parse_args()
    if not Path(args.fer_python).is_file():
        print(
            f"fer's python not found at {args.fer_python}: make its venv with `{FER_SETUP}` "
            "(see benchmarks/README.md), or pass --fer-python"
        )
        return 2
    modes = [m.strip() for m in args.modes.split(",")]
    work = args.keep or Path(tempfile.mkdtemp(prefix="fer_bench_"))
    videos = build_videos(work / "videos", args.frames)
    frames_per_video = args.frames
    if args.one_video:
        joined = [frame for video in videos for frame in _read(video)]
        for video in videos:
            video.unlink()
        videos, frames_per_video = [_write(work / "videos" / "all_in_one.avi", joined)], len(joined)
    one_frame = work / "one_frame"
    one_frame.mkdir(exist_ok=True)
    _write(one_frame / "astronaut_once.avi", [cv2.VideoCapture(str(videos[0])).read()[1]])
    driver = work / "fer_driver.py"
    driver.write_text(FER_DRIVER)
    env = {"OMP_NUM_THREADS": "2"}  # both tools may use the 2 cores (tenfold sets its own thread count)
    total_frames = frames_per_video * len(videos)

    def command(mode: str, target: str, out: Path) -> list[str]:
        if mode.startswith("fer "):
            vids = videos if target == "all" else sorted(one_frame.glob("*.avi"))
            return fer_command(args.fer_python, mode.split()[1], out, vids, driver)
        vdir = work / "videos" if target == "all" else one_frame
        return tenfold_command(vdir, out, work / "runs", TENFOLD_MODES[mode])

    import torch  # noqa: F401  (only to time a bare `import torch` for the start-up budget)

    torch_import = min(run_measured([sys.executable, "-c", "import torch"])[0] for _ in range(2))
    for mode in modes:  # untimed warm-up: the first start of TensorFlow or torch reads them from a cold disk cache
        run_measured(command(mode, "one", work / "out" / f"warmup-{mode.replace(' ', '_')}"), env)
    results: dict[str, dict[str, list[float]]] = {m: {"wall": [], "start": [], "rss": []} for m in modes}
    for round_ in range(args.rounds):
        order = modes if round_ % 2 == 0 else modes[::-1]
        for mode in order:
            tag = mode.replace(" ", "_")
            for target in ("one", "all"):
                out = work / "out" / f"{tag}-{target}-{round_}"
                if out.exists():
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                wall, rss, _ = run_measured(command(mode, target, out), env)
                results[mode]["start" if target == "one" else "wall"].append(wall)
                if target == "all":
                    results[mode]["rss"].append(rss)
            print(
                f"round {round_} {mode}: {results[mode]['wall'][-1]:.1f} s, start-up "
                f"{results[mode]['start'][-1]:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    base = "fer tflite" if "fer tflite" in modes else modes[0]
    print(
        f"\n{len(videos)} video(s) x {frames_per_video} frames at {SIZE[0]}x{SIZE[1]} ({total_frames} frames), "
        f"{args.rounds} alternated rounds; `import torch` alone: {torch_import:.1f} s; ratios vs {base} "
        "(median of per-round ratios; > 1 is better)"
    )
    print("| pipeline | wall s | start-up s | steady frames/s | peak RSS MiB | wall ratio | steady ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode in modes:
        r, b = results[mode], results[base]
        # Start-up is a fixed cost: its least value over the rounds is the estimate least hit by the load.
        steady = [total_frames / max(w - min(r["start"]), 1e-3) for w in r["wall"]]
        steady_base = [total_frames / max(w - min(b["start"]), 1e-3) for w in b["wall"]]
        wall_ratio = statistics.median(bw / w for bw, w in zip(b["wall"], r["wall"]))
        steady_ratio = statistics.median(s / bs for s, bs in zip(steady, steady_base))
        print(
            f"| {mode} | {statistics.median(r['wall']):.1f} | {statistics.median(r['start']):.1f} | "
            f"{statistics.median(steady):.1f} | {statistics.median(r['rss']):.0f} | {wall_ratio:.2f}x | "
            f"{steady_ratio:.2f}x |"
        )

    reference_mode = "fer keras" if "fer keras" in modes else None
    if reference_mode is None:
        return 0
    ref_dir = work / "out" / "fer_keras-all-0"
    reference = {v.stem: json.loads((ref_dir / f"{v.stem}.json").read_text()) for v in videos}
    print(
        f"\nagreement per frame with fer's Keras model ({sum(len(f) for r in reference.values() for f in r)} "
        "faces); 'CSV' = every per-video CSV has fer's to_pandas cells, up to the order of faces in a frame"
    )
    print(
        "| pipeline | faces/frame same | found | missed | extra | IoU mean (min) | argmax same | "
        "max score diff | max video-mean change | CSV |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mode in modes:
        out = work / "out" / f"{mode.replace(' ', '_')}-all-0"
        if mode.startswith("fer "):
            other = {v.stem: json.loads((out / f"{v.stem}.json").read_text()) for v in videos}
            identical = all(cells_identical(ref_dir / f"{v.stem}.csv", out / f"{v.stem}.csv") for v in videos)
        else:
            other = {v.stem: tenfold_frames(out / f"{v.stem}-t300.csv", frames_per_video) for v in videos}
            identical = all(cells_identical(ref_dir / f"{v.stem}.csv", out / f"{v.stem}-t300.csv") for v in videos)
        a = agreement(reference, other)
        print(
            f"| {mode} | {a['faces/frame same']:.3f} | {a['found']} | {a['missed']} | {a['extra']} | "
            f"{a['IoU mean']:.3f} ({a['IoU min']:.2f}) | {a['argmax same']:.3f} | {a['max |score diff|']:.3f} | "
            f"{a['max video mean change']:.4f} | {'yes' if identical else 'no'} |"
        )
    if args.keep is None:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
