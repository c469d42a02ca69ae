"""ASR LightningModule: the paper's CIFAR ResNet164 in its four variants under the shared classifier."""

from __future__ import annotations

from torch import nn

from datamodules.image_classification import ImageClassificationDataModule
from lightning_modules.asr.config import ASRExperimentConfig
from lightning_modules.asr.resnet_cifar import VARIANTS, resnet_cifar
from lightning_modules.attention_reparam.callbacks import asr_callbacks
from lightning_modules.classification.module import ImageClassifier
from tenfold.registry import register_method


def _callbacks(cfg: ASRExperimentConfig) -> list:
    uses_asr, input_attention = VARIANTS.get(cfg.model.variant, (False, False))
    return asr_callbacks(cfg.asr, uses_asr, input_attention)


@register_method(
    "asr",
    config=ASRExperimentConfig,
    datamodule=ImageClassificationDataModule,
    callbacks=_callbacks,
)
class ASRModule(ImageClassifier):
    config_class = ASRExperimentConfig

    def build_net(self, num_classes: int) -> nn.Module:
        m = self.cfg.model
        net = resnet_cifar(m.variant, m.depth, num_classes, m.attention)
        for module in net.modules():
            if hasattr(module, "psi"):
                nn.init.constant_(module.psi, self.cfg.asr.psi_init)
        return net

    def export_spec(self) -> dict:
        m = self.cfg.model
        return {
            "target": "lightning_modules.asr.resnet_cifar:resnet_cifar",
            "kwargs": {"variant": m.variant, "depth": m.depth, "num_classes": self.num_classes,
                       "attention": m.attention},
        }
