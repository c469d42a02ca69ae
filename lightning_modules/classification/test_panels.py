"""The test stage's dashboard panels for classifiers: a confusion matrix and a table of test predictions.

The confusion matrix is a torchmetrics state summed over ranks (every test image counts once under DDP); the
W&B table holds the first `max_rows` test images of rank 0 with label, prediction and its probability.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from tenfold.media import figure_image, has_media_logger, log_image, pyplot, to_uint8_chw


def confusion_matrix_image(matrix: np.ndarray, class_names: list[str]) -> Any:
    """Counts (true row, predicted column) as a labelled heat map."""
    plt = pyplot()
    size = max(4.0, 0.45 * len(class_names))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=90)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(class_names) <= 20:
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=7,
                    color="white" if count > matrix.max() / 2 else "black")
    ax.set_title(f"test confusion matrix ({int(matrix.sum())} images)")
    return figure_image(fig)


class TestPanelsCallback(L.Callback):
    def __init__(self, max_rows: int = 64) -> None:
        self.max_rows = max_rows
        self.confusion: MulticlassConfusionMatrix | None = None
        self.rows: list[list[Any]] = []
        self.mean = self.std = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = MulticlassConfusionMatrix(pl_module.num_classes).to(pl_module.device)
        self.rows = []
        meta = trainer.datamodule.export_meta()
        self.mean = torch.tensor(meta.mean).view(-1, 1, 1)
        self.std = torch.tensor(meta.std).view(-1, 1, 1)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, Tensor):
            return
        images, targets = batch[0], batch[1]
        self.confusion.update(outputs, targets)
        if not trainer.is_global_zero or len(self.rows) >= self.max_rows:
            return
        import wandb

        probs = outputs.softmax(-1).detach().cpu()
        names = pl_module.class_names
        for image, target, prob in zip(images.cpu(), targets.tolist(), probs):
            if len(self.rows) == self.max_rows:
                break
            pixels = to_uint8_chw((image.float() * self.std + self.mean).clamp(0, 1)).permute(1, 2, 0).numpy()
            pred = int(prob.argmax())
            self.rows.append([wandb.Image(pixels), names[target], names[pred], round(float(prob[pred]), 4)])

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        matrix = self.confusion.compute().cpu().numpy()  # a collective: every rank computes it
        if not trainer.is_global_zero or not has_media_logger(trainer.loggers):
            return
        log_image(trainer.loggers, "test/confusion_matrix", confusion_matrix_image(matrix, pl_module.class_names),
                  trainer.global_step)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and self.rows:
                logger.log_table("test/predictions", columns=["image", "label", "prediction", "probability"],
                                 data=self.rows, step=trainer.global_step)
