"""`strategy=ddp` with 2 CPU processes (gloo), for every method's demo config: one run dir, one
checkpoint set, one W&B run, and test metrics synced over both ranks' shards."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from conftest import REPO, only_run_dir, train_subprocess
from tenfold.registry import get_method
from wandb_offline import image_pixels, logged_images, missing_panels, panels, readme_dashboards

DEMO_CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs" / "demo").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("config", DEMO_CONFIGS, ids=lambda p: Path(p).stem)
def test_ddp_two_cpu_processes(config: str, tmp_path: Path) -> None:
    method = OmegaConf.load(REPO / config).method
    proc = train_subprocess(
        "--config", config, f"run.root={tmp_path}", "logger=wandb",
        "trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "data.batch_size_per_device=16", "data.eval_batch_size_per_device=45", "export.onnx=false",
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path, method)
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["best.ckpt", "epoch000-step0000003.ckpt", "last.ckpt"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert (run / "export" / "model.pt").is_file()
    assert OmegaConf.load(run / "meta.yaml").world_size == 2
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    test_metrics = sorted({key for row in rows for key, value in row.items() if key.startswith("test/") and value})
    assert test_metrics and all(sum(1 for row in rows if row.get(key)) == 1 for key in test_metrics)
    # What the dashboard shows after `wandb sync`: every panel the README lists, and no blank picture.
    assert not missing_panels(readme_dashboards(REPO / "README.md")[method], panels(run))
    for image in logged_images(run):
        assert len(np.unique(image_pixels(image))) > 2, f"{image.name} is blank"
    if "test/top1" not in test_metrics:
        return  # not a classifier (e.g. lens design): its own tests compare DDP with one process
    logged = [float(row["test/top1"]) for row in rows if row.get("test/top1")]

    # The same checkpoint evaluated on the whole test split in one process.
    spec = get_method(method)
    module = spec.module_class.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True).eval()
    datamodule = spec.datamodule_class(module.cfg.data)
    if not hasattr(datamodule, "class_names"):
        return  # the cross-check below counts images; other data (e.g. text windows) is checked in its own tests
    datamodule.setup("test")
    correct = total = 0
    with torch.no_grad():
        for images, targets in DataLoader(datamodule.test_set, batch_size=90):
            correct += int((module(images).argmax(-1) == targets).sum())
            total += len(targets)
    assert total == 270
    assert logged[0] == pytest.approx(correct / total, abs=1e-6)
