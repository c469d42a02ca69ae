"""The LightningModule shared by image-classification methods (RDNet, ASR, LoRAPrune-ViT).

A method subclasses it, names its config class and implements `build_net` and `export_spec`; the
training objective (Mixup/CutMix + label smoothing, timm's recipe), top-1/top-5 metrics, the prediction
grid and the ONNX names live here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules.classification.prediction_samples import PredictionSamplesCallback
from lightning_modules.classification.test_panels import TestPanelsCallback
from tenfold.method import MethodModule


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


class ImageClassifier(MethodModule, ABC):
    monitors = ("val/loss", "val/top1", "val/top5")
    def __init__(self, config: dict, class_names: list[str]) -> None:
        super().__init__(config, class_names=list(class_names))
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

    # ---- the contract's export and callback hooks

    def onnx_io(self) -> tuple[list[str], list[str]]:
        return ["images"], ["logits"]

    def optimizer_parameters(self) -> nn.Module:
        return self.net

    def configure_callbacks(self) -> list:
        return [PredictionSamplesCallback(), TestPanelsCallback()]

    # ---- steps

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch
        if self.mixup:
            images, targets = self.mixup(images, targets)  # targets become soft (B, classes)
        loss = self.train_loss(self(images), targets)
        self.log_train_loss(loss, images.shape[0])
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
