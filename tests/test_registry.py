"""Lazy registration: only the selected method is imported, and a missing extra is one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO

# Runs train.py's main with the optional extras' packages made unimportable (as after `pip install -e .`).
# The optional extras' distributions (import names and their metadata), as after `pip install -e .` alone.
EXTRA_DISTRIBUTIONS = ("peft", "transformers", "cv2", "opencv", "h5py", "facenet", "fer")


@pytest.fixture(scope="module")
def python_without_extras(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A venv whose site-packages links every installed package except the optional extras' ones."""
    venv = tmp_path_factory.mktemp("no-extras") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    source = Path(sysconfig.get_paths()["purelib"])
    for entry in source.iterdir():
        if not entry.name.lower().startswith(EXTRA_DISTRIBUTIONS):
            (site / entry.name).symlink_to(entry)
    return str(venv / "bin" / "python")


def _train(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_list_methods_imports_no_method(tmp_path: Path) -> None:
    code = "import sys; from tenfold.cli import main; main(['--list-methods']); " \
           "print(sorted(m for m in sys.modules if m in ('torch', 'lightning') " \
           "or m.startswith(('torch.', 'lightning.', 'lightning_modules.'))))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    *listing, imported = proc.stdout.strip().splitlines()
    assert {line.split()[0] for line in listing} >= {"rdnet", "asr", "loraprune", "deeplens", "face_emotion"}
    assert imported == "[]"  # neither any method nor torch/Lightning were imported to list them


def test_rdnet_demo_trains_without_the_optional_extras(python_without_extras: str, tmp_path: Path) -> None:
    missing = subprocess.run([python_without_extras, "-c", "import peft"], capture_output=True, text=True)
    assert missing.returncode != 0  # the environment really lacks the extras
    listing = _train(python_without_extras, "--list-methods")
    assert listing.returncode == 0 and "loraprune" in listing.stdout
    proc = _train(python_without_extras, "--config", "configs/demo/rdnet.yaml", "logger=none", "trainer.max_steps=2",
                  "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false",
                  "export.onnx=false", f"run.root={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(tmp_path.glob("rdnet/*/export/model.pt"))


def test_a_method_whose_extra_is_missing_fails_in_one_line(python_without_extras: str, tmp_path: Path) -> None:
    face_data = ["data.videos_dir=x", "data.output_dir=y"]
    cases = (("configs/demo/loraprune_lm.yaml", "loraprune", "llm", []),
             ("configs/examples/face_emotion_demo.yaml", "face_emotion", "face", face_data))
    for config, method, extra, required in cases:
        proc = _train(python_without_extras, "--config", config, *required, f"run.root={tmp_path}")
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith(f"error: method '{method}' needs the '{extra}' extra: pip install -e .[{extra}]")
