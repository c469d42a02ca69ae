"""Shared fixtures: runs go to a temp dir, W&B is off unless a test turns it on, tiny data is built once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# Small enough for a CPU test, same code path as the demo: 2 train batches, 1 val/test batch.
TINY = [
    "logger=none",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    *QUIET,
    "data.batch_size_per_device=16",
    "export.onnx=false",
]


@pytest.fixture(scope="session")
def _cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache-home")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, _cache_home: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("TENFOLD_RUN_DIR", raising=False)
    # Caches that default to ~/.cache (the causal-LM token cache, W&B's) stay inside the test session.
    monkeypatch.setenv("XDG_CACHE_HOME", str(_cache_home))


@pytest.fixture(autouse=True)
def _no_files_left_in_repo():
    """Fail a test that writes into the repository instead of its temp dir."""
    before = set(_untracked())
    yield
    leaked = set(_untracked()) - before
    assert not leaked, f"test left files in the repo: {sorted(leaked)}"


def _untracked() -> list[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                         capture_output=True, text=True)
    untracked = [line[3:] for line in out.stdout.splitlines() if line.startswith("??")]
    # Ignored output folders a run would create if it forgot run.root.
    for ignored in ("runs", "wandb", "lightning_logs"):
        untracked += [str(p) for p in (REPO / ignored).rglob("*")] if (REPO / ignored).exists() else []
    return untracked


def train_cli(*args: str) -> int:
    """Run train.py's main in-process (shares the imported torch/Lightning; much faster)."""
    from tenfold.cli import main

    os.environ.pop("TENFOLD_RUN_DIR", None)
    try:
        return main(list(args))
    finally:
        os.environ.pop("TENFOLD_RUN_DIR", None)


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in the repository root, where configs name their shipped files."""
    monkeypatch.chdir(REPO)


def error_line(capsys: pytest.CaptureFixture, *args: str) -> str:
    """The one `error:` line train.py prints for bad input (exit code 2)."""
    assert train_cli(*args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


FACE_EMOTION_DEMO = "configs/examples/face_emotion_demo.yaml"


def face_emotion_cli(videos: Path, out: Path, root: Path, *extra: str) -> int:
    """The face_emotion demo over `videos`, CSVs to `out`, its run under `root`."""
    return train_cli("--config", FACE_EMOTION_DEMO, f"data.videos_dir={videos}",
                     f"data.output_dir={out}", f"run.root={root}", "logger=none", *extra)


def train_subprocess(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "TENFOLD_RUN_DIR"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def only_run_dir(root: Path, method: str = "rdnet") -> Path:
    runs = list((root / method).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short RDNet demo run with the W&B offline logger, ONNX export and the test stage (tests/test_train.py,
    tests/test_exports.py)."""
    root = tmp_path_factory.mktemp("runs")
    overrides = [o for o in TINY if not o.startswith(("logger=", "export.onnx"))]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        assert train_cli("--config", "configs/demo/rdnet.yaml", f"run.root={root}", "run.name=r1",
                         *overrides, "trainer.max_epochs=2") == 0
    return root / "rdnet" / "r1"


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageFolder tree (train/val/test x 3 classes x 4 images) of procedurally drawn shapes."""
    root = tmp_path_factory.mktemp("imagefolder")
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for label, name in enumerate(("bars", "dots", "plain")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 60, size=(24, 24, 3), dtype=np.uint8)
                if label == 0:
                    pixels[:, ::4] = 255
                elif label == 1:
                    pixels[::6, ::6] = 255
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


FRAMES = 12
BLANK_EVERY = 4  # astronaut video: frames 0, 4, 8 are blank, so fer would give them no row


def write_avi(path: Path, frames: list[np.ndarray]) -> None:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for frame in frames:
        writer.write(frame)
    writer.release()


def _bgr(rgb_or_gray: np.ndarray) -> np.ndarray:
    image = np.stack([rgb_or_gray] * 3, axis=-1) if rgb_or_gray.ndim == 2 else rgb_or_gray
    return np.ascontiguousarray(image[..., ::-1])


@pytest.fixture(scope="session")
def face_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """astronaut.avi (a smiling face, some blank frames), camera.avi and coffee.avi (no frontal face), broken.avi."""
    import skimage.data

    root = tmp_path_factory.mktemp("videos")
    face = _bgr(skimage.data.astronaut())
    blank = np.full_like(face, 128)
    write_avi(root / "astronaut.avi", [blank if i % BLANK_EVERY == 0 else face for i in range(FRAMES)])
    write_avi(root / "camera.avi", [_bgr(skimage.data.camera())] * FRAMES)
    write_avi(root / "coffee.avi", [_bgr(skimage.data.coffee())] * FRAMES)
    (root / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI not really a video" * 10)
    return root
