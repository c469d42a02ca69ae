"""One captioned grid of validation images with predicted and true labels per validation (W&B or TensorBoard)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from tenfold.media import has_media_logger, log_image_grid


class PredictionSamplesCallback(L.Callback):
    def __init__(self, max_images: int = 16) -> None:
        self.max_images = max_images
        self.mean = self.std = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        meta = trainer.datamodule.export_meta()  # the normalisation to undo for display
        self.mean = torch.tensor(meta.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(meta.std).view(1, -1, 1, 1)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not has_media_logger(trainer.loggers) or not isinstance(outputs, Tensor):
            return
        images, targets = batch[0][: self.max_images], batch[1][: self.max_images]
        images = (images.detach().float().cpu() * self.std + self.mean).clamp(0, 1)  # (N, 3, H, W)
        preds = outputs[: self.max_images].argmax(dim=-1).cpu()
        names = pl_module.class_names
        captions = [f"{names[p]} / {names[t]}" for p, t in zip(preds, targets)]
        log_image_grid(trainer.loggers, "val/predictions", list(images), trainer.global_step, captions)
