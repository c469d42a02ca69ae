"""Bad input gets one clear error line naming the thing and the fix, and a non-zero exit."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import TINY, error_line, train_subprocess

DEMO = "configs/demo/rdnet.yaml"


pytestmark = pytest.mark.usefixtures("in_repo")




def test_missing_config_file(capsys: pytest.CaptureFixture) -> None:
    assert "config file not found: configs/nope.yaml" in error_line(capsys, "--config", "configs/nope.yaml")


def test_yaml_syntax_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: rdnet\ndata: {source: digits\n")
    assert "YAML syntax error" in error_line(capsys, "--config", str(bad))


def test_unknown_method(capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, "method=nope")
    assert "unknown method 'nope'" in line and "rdnet" in line


def test_unknown_key(capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, "optim.learning_rate=0.1")
    assert "unknown key 'optim.learning_rate'" in line and "lr (float)" in line


def test_wrong_type(capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, "data.batch_size_per_device=big")
    assert "data.batch_size_per_device" in line and "int" in line


def test_paper_config_without_imagenet_names_the_data_keys(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", "configs/rdnet.yaml", f"run.root={tmp_path}", "logger=none")
    assert "data.root" in line and "train/" in line


def test_missing_data_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "data.source=imagefolder",
                      f"data.root={tmp_path / 'absent'}", *TINY)
    assert f"{tmp_path / 'absent' / 'train'}" in line and "data.root" in line


def test_empty_dataset_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cat").mkdir(parents=True)
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "data.source=imagefolder",
                      f"data.root={tmp_path / 'data'}", *TINY)
    assert "holds no images" in line and str(tmp_path / "data" / "train") in line


def test_corrupt_image_is_named(image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    corrupt = data / "train" / "dots" / "0.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", "data.source=imagefolder",
                      f"data.root={data}", *TINY, "data.batch_size_per_device=36", "trainer.limit_train_batches=1")
    assert f"cannot decode image file {corrupt}" in line


def test_truncated_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "half.ckpt"
    ckpt.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", f"ckpt_path={ckpt}", *TINY)
    assert f"cannot read checkpoint {ckpt}" in line and "truncated" in line


def test_real_process_prints_one_line_and_exits_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: rdnet\ntrainer: {max_epochs: three}\n")
    proc = train_subprocess("--config", str(bad), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line, no traceback
    assert "trainer.max_epochs" in proc.stderr and "Traceback" not in proc.stderr


def test_paper_asr_config_without_cifar100_says_how_to_get_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", "configs/asr.yaml", f"run.root={tmp_path}", "logger=none",
                      f"data.cache_dir={tmp_path / 'empty-hf-cache'}")
    assert "uoft-cs/cifar100" in line and "data.offline=false" in line and "data.root" in line


@pytest.mark.parametrize("override", ["trainer.devices=abc", "trainer.precision=17"])
def test_invalid_trainer_setting(override: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = error_line(capsys, "--config", DEMO, f"run.root={tmp_path}", override, *TINY)
    assert line.startswith("error: invalid trainer.* setting")
