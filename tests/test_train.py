"""End-to-end runs through train.py's main: layout of the run dir, W&B offline, export, predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TINY, only_run_dir, train_cli
from lightning_modules.classification.predict import predict
from tenfold.checkpoint_io import load_weights_only
from tenfold.export import load_export

DEMO_CONFIGS = sorted(str(p) for p in (REPO / "configs" / "demo").glob("*.yaml"))


def _digit_png(folder: Path) -> str:
    from datamodules.digits import digit_images

    digit_images(0)["test"][0][0].save(folder / "digit.png")
    return str(folder / "digit.png")


# What predict.py is given for a run of each method (a method without a predictor must refuse in one line).
PREDICT_INPUTS = {"rdnet": _digit_png, "asr": _digit_png, "loraprune_vit": _digit_png, "deeplens_edof": _digit_png,
                  "loraprune": lambda folder: "the", "deeplens": None}


@pytest.mark.parametrize("config", DEMO_CONFIGS, ids=lambda p: Path(p).stem)
def test_demo_config_fast_dev_run_and_predict(config: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from predict import main as predict_main
    from tenfold.registry import locations

    method = OmegaConf.load(config).method
    assert train_cli("--config", config, f"run.root={tmp_path}", "logger=none",
                     "trainer.fast_dev_run=true", "export.onnx=false") == 0
    run = only_run_dir(tmp_path, method)
    assert (run / "export" / "model.pt").is_file()
    capsys.readouterr()
    if locations()[method].predictor is None:
        assert predict_main([str(run)]) == 2
        assert capsys.readouterr().err.strip() == f"error: method '{method}' has no predictor: its results are the " \
                                                  "files in its run directory (report/, metrics.csv, export/)"
        return
    assert method in PREDICT_INPUTS, f"add the inputs predict.py takes for '{method}' to PREDICT_INPUTS"
    make_input = PREDICT_INPUTS[method]
    assert predict_main([str(run), *([make_input(tmp_path)] if make_input else [])]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(isinstance(row, dict) for row in rows)


def test_run_dir_layout(finished_run: Path) -> None:
    for name in ("config.yaml", "meta.yaml", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "export/model.pt", "export/export_meta.yaml", "export/model.onnx"):
        assert (finished_run / name).is_file(), name
    meta = OmegaConf.load(finished_run / "meta.yaml")
    assert meta.world_size == 1 and meta.versions.torch and meta.git_sha and meta.wandb_id
    assert OmegaConf.load(finished_run / "config.yaml").trainer.max_epochs == 2
    header = (finished_run / "metrics.csv").read_text().splitlines()[0]
    assert "val/top1" in header and "test/top1" in header and "train/loss" in header.split(",")


def test_one_offline_wandb_run_with_the_stored_id(finished_run: Path) -> None:
    runs = list((finished_run / "wandb").glob("offline-run-*"))
    wandb_id = OmegaConf.load(finished_run / "meta.yaml").wandb_id
    assert len(runs) == 1 and runs[0].name.endswith(wandb_id)


def test_checkpoint_holds_plain_config_and_loads_weights_only(finished_run: Path) -> None:
    ckpt = load_weights_only(finished_run / "checkpoints" / "last.ckpt")
    assert ckpt["hyper_parameters"]["config"]["method"] == "rdnet"
    assert ckpt["global_step"] > 0 and "RNGStateCallback" in ckpt["callbacks"]


def test_export_reproduces_the_trained_model(finished_run: Path) -> None:
    from lightning_modules.rdnet.module import RDNetModule

    module = RDNetModule.load_from_checkpoint(finished_run / "checkpoints" / "best.ckpt", weights_only=True)
    exported, meta = load_export(finished_run / "export")
    assert meta["class_names"] == [str(d) for d in range(10)] and meta["input_size"] == [3, 32, 32]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), module.eval()(x), rtol=0, atol=1e-6)


def test_onnx_export_matches(finished_run: Path) -> None:
    import onnx

    model = onnx.load(str(finished_run / "export" / "model.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["images"]


def test_predict_on_digit_images(finished_run: Path, tmp_path: Path) -> None:
    from datamodules.digits import digit_images

    paths = []
    for i, (image, _) in enumerate(digit_images(0)["test"][:3]):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    rows = list(predict(finished_run, [str(p) for p in paths], {"top_k": "3"}))
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    for row in rows:
        probs = [t["prob"] for t in row["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001


def test_predict_cli_prints_json(finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from datamodules.digits import digit_images
    from predict import main

    digit_images(0)["test"][0][0].save(tmp_path / "d.png")
    assert main([str(finished_run), str(tmp_path / "d.png"), "-o", "top_k=2"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert len(row["top"]) == 2


def test_validate_only_builds_without_training(tmp_path: Path) -> None:
    assert train_cli("--config", "configs/demo/rdnet.yaml", f"run.root={tmp_path}", "--validate-only",
                     "logger=none") == 0
    run = only_run_dir(tmp_path)
    assert (run / "config.yaml").is_file() and not (run / "checkpoints").exists()


def test_print_config_and_list_methods(capsys: pytest.CaptureFixture) -> None:
    assert train_cli("--list-methods") == 0
    assert "rdnet" in capsys.readouterr().out
    assert train_cli("--config", "configs/demo/rdnet.yaml", "--print-config", "seed=5") == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.seed == 5 and printed.method == "rdnet"


def test_tensorboard_gets_metrics_lr_and_prediction_images(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert train_cli("--config", "configs/demo/rdnet.yaml", f"run.root={tmp_path}", *TINY, "logger=tensorboard",
                     "trainer.log_every_n_steps=1", "export.enabled=false") == 0
    events = EventAccumulator(str(only_run_dir(tmp_path) / "tensorboard")).Reload()
    assert "val/predictions" in events.Tags()["images"]
    # timm puts decayed and non-decayed (1-D) parameters in two groups
    assert {"val/top1", "train/loss_step", "lr-AdamW/pg1", "lr-AdamW/pg2"} <= set(events.Tags()["scalars"])


def test_batch_job_progress_lines_carry_totals_and_eta(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import re

    with caplog.at_level(logging.INFO):
        assert train_cli("--config", "configs/demo/rdnet.yaml", f"run.root={tmp_path}", *TINY,
                         "trainer.log_every_n_steps=1", "run.progress_every_s=0", "export.enabled=false") == 0
    lines = [r.getMessage() for r in caplog.records if re.match(r"epoch \d+/1 step \d+/2 ", r.getMessage())]
    assert re.search(r"step 1/2 lr=\S+ .*train/loss_step=\d.* steps/s, ETA \d+:\d\d\)$", lines[0]), lines
    assert lines[-1].startswith("epoch 0/1 step 2/2 ")  # the closing line of the run


def test_wandb_prediction_grid_holds_the_validation_pixels(finished_run: Path) -> None:
    """What reaches the dashboard: one captioned grid per validation whose first tile is the first validation image."""
    import numpy as np
    from PIL import Image

    from datamodules.image_classification import ImageClassificationDataModule
    from tenfold.cli import load_config
    from tenfold.media import MIN_SIDE

    grids = sorted(finished_run.glob("wandb/offline-run-*/files/media/images/val/predictions_*.png"))
    assert len(grids) == 2  # one per validation (2 epochs), not one file per image
    pixels = np.asarray(Image.open(grids[0]).convert("RGB")).astype(int)
    cfg = load_config([str(finished_run / "config.yaml")], [])
    data = ImageClassificationDataModule(cfg.data)
    data.setup("validate")
    image = data.val_set[0][0] * torch.tensor(cfg.data.std).view(3, 1, 1) + torch.tensor(cfg.data.mean).view(3, 1, 1)
    expected = (image.clamp(0, 1) * 255).round().permute(1, 2, 0).numpy().astype(int)  # (32, 32, 3)
    factor = -(-MIN_SIDE // expected.shape[0])
    expected = expected.repeat(factor, 0).repeat(factor, 1)
    tile = pixels[2:2 + expected.shape[0], 2:2 + expected.shape[1]]  # make_grid's 2-px padding
    assert np.abs(tile - expected).max() <= 1
    assert len(np.unique(tile)) > 8  # a real digit, not a black/constant picture


def test_wandb_history_holds_every_panel_the_readme_lists(finished_run: Path) -> None:
    """Read through the run's `.wandb` log, as `wandb sync` will: the README's promise for the demo holds."""
    from wandb_offline import history, missing_panels, panels, readme_dashboards

    logged = panels(finished_run)
    assert not missing_panels(readme_dashboards(REPO / "README.md")["rdnet"], logged)
    val_top1 = [row["val/top1"] for row in history(finished_run) if "val/top1" in row]
    assert len(val_top1) == 2 and all(0 <= v <= 1 for v in val_top1)  # one value per epoch, a fraction


def test_wandb_test_panels_confusion_matrix_and_prediction_table(finished_run: Path) -> None:
    import numpy as np
    from PIL import Image

    media = next(finished_run.glob("wandb/offline-run-*/files/media"))
    (matrix,) = media.glob("images/test/confusion_matrix_*.png")
    assert len(np.unique(np.asarray(Image.open(matrix).convert("L")))) > 16
    (table,) = media.glob("table/test/predictions_*.table.json")
    content = json.loads(table.read_text())
    assert content["columns"] == ["image", "label", "prediction", "probability"]
    assert len(content["data"]) == 16  # TINY: one test batch of 16 images
    names = [str(d) for d in range(10)]
    assert all(row[1] in names and row[2] in names and 0 < row[3] <= 1 for row in content["data"])
