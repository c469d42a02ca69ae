"""Logs a few validation images with predicted and true labels to the dashboard (W&B or TensorBoard)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor


class PredictionSamplesCallback(L.Callback):
    def __init__(self, mean: list[float], std: list[float], class_names: list[str], max_images: int = 16) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.class_names = class_names
        self.max_images = max_images

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
        if not loggers or not isinstance(outputs, Tensor):
            return
        images, targets = batch[0][: self.max_images], batch[1][: self.max_images]
        images = (images.detach().float().cpu() * self.std + self.mean).clamp(0, 1)  # (N, 3, H, W)
        preds = outputs[: self.max_images].argmax(dim=-1).cpu()
        captions = [f"pred {self.class_names[p]} / true {self.class_names[t]}" for p, t in zip(preds, targets)]
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/predictions", images=list(images), caption=captions,
                                 step=trainer.global_step)
            else:
                logger.experiment.add_images("val/predictions", images, trainer.global_step)
