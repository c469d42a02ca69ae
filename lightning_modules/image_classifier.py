"""The LightningModule shared by image-classification methods (RDNet, ASR, ...).

A method subclasses it, names its config class and implements `build_net` and `export_spec`; the
training objective (Mixup/CutMix + label smoothing, timm's recipe), top-1/top-5 metrics and the
optimizer/schedule live here once.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import lightning as L
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from tenfold.config import from_plain
from tenfold.loggers import redact_secrets
from tenfold.optim import TimmSchedulerSteps, build_optimizer, optimizers_with_schedule, scaled_lr


@dataclass
class MixupConfig:
    """Batch-level Mixup/CutMix (timm's `Mixup`); both alphas 0 turns it off."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5


@dataclass
class ClassifierConfig:
    num_classes: Any = None  # None: taken from the data's class list
    label_smoothing: float = 0.0
    mixup: MixupConfig = field(default_factory=MixupConfig)


def _accuracy(num_classes: int) -> MetricCollection:
    # micro top-k accuracy; states are summed across ranks when computed, so DDP metrics are global.
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        }
    )


class ImageClassifier(TimmSchedulerSteps, L.LightningModule, ABC):
    config_class: ClassVar[type]  # the method's ExperimentConfig subclass

    def __init__(self, config: dict, class_names: list[str]) -> None:
        super().__init__()
        # Plain types only, so `load_from_checkpoint` needs no arguments and weights-only loading works.
        self.save_hyperparameters({"config": redact_secrets(config), "class_names": list(class_names)})
        self.cfg = from_plain(self.config_class, config)
        self.class_names = list(class_names)
        self.num_classes = self.cfg.model.num_classes or len(class_names)
        self.net = self.build_net(self.num_classes)
        self.mixup = self._build_mixup()
        self.train_loss = SoftTargetCrossEntropy() if self.mixup else nn.CrossEntropyLoss(
            label_smoothing=self.cfg.model.label_smoothing
        )
        self.eval_loss = nn.CrossEntropyLoss()
        self.val_metrics = _accuracy(self.num_classes).clone(prefix="val/")
        self.test_metrics = _accuracy(self.num_classes).clone(prefix="test/")

    # ---- what a method provides

    @abstractmethod
    def build_net(self, num_classes: int) -> nn.Module:
        """The method's network (pure torch) for `num_classes` outputs."""

    @abstractmethod
    def export_spec(self) -> dict:
        """How to rebuild the exported net: {"target": "module:function", "kwargs": {...}}."""

    # ---- export hook used by the platform

    def export_model(self) -> nn.Module:
        """A float32, eval-mode copy of the network, detached from Lightning."""
        return copy.deepcopy(self.net).float().cpu().eval()

    # ---- steps

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch
        if self.mixup:
            images, targets = self.mixup(images, targets)  # targets become soft (B, classes)
        loss = self.train_loss(self(images), targets)
        # The per-step value is rank 0's own (no collective every step); the epoch mean is synced.
        self.log("train/loss_step", loss, prog_bar=True, batch_size=images.shape[0])
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=images.shape[0])
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).softmax(dim=-1)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str, metrics: MetricCollection) -> Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.eval_loss(logits, targets)
        metrics.update(logits, targets)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True, batch_size=images.shape[0])
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=images.shape[0])
        return logits

    # ---- optimisation

    def configure_optimizers(self) -> Any:
        trainer = self.trainer
        global_batch = self.cfg.data.batch_size_per_device * trainer.world_size * trainer.accumulate_grad_batches
        lr = scaled_lr(self.cfg.optim, global_batch)
        optimizer = build_optimizer(self.net, self.cfg.optim, lr)
        total = int(trainer.estimated_stepping_batches)
        if trainer.max_epochs and trainer.max_epochs > 0 and trainer.max_steps == -1:
            per_epoch = max(1, total // trainer.max_epochs)
        else:
            per_epoch = max(1, int(trainer.num_training_batches) // trainer.accumulate_grad_batches)
        self._log_run_numbers({"optim/global_batch": global_batch, "optim/base_lr": lr,
                               "optim/total_updates": total})
        return optimizers_with_schedule(optimizer, self.cfg.optim, total, per_epoch)

    def _log_run_numbers(self, numbers: dict) -> None:
        for logger in self.loggers:
            logger.log_hyperparams(numbers)

    def _build_mixup(self) -> Mixup | None:
        mix = self.cfg.model.mixup
        if mix.mixup_alpha <= 0 and mix.cutmix_alpha <= 0:
            return None
        return Mixup(
            mixup_alpha=mix.mixup_alpha,
            cutmix_alpha=mix.cutmix_alpha,
            prob=mix.prob,
            switch_prob=mix.switch_prob,
            mode="batch",
            label_smoothing=self.cfg.model.label_smoothing,
            num_classes=self.num_classes,
        )
