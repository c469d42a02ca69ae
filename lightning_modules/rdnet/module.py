"""RDNet LightningModule: timm's RDNet under the shared image-classification objective."""

from __future__ import annotations

from torch import nn

from datamodules.image_classification import ImageClassificationDataModule
from lightning_modules.attention_reparam.callbacks import asr_callbacks
from lightning_modules.classification.module import ImageClassifier
from lightning_modules.rdnet.config import RDNetConfig
from lightning_modules.rdnet.net import build_rdnet
from tenfold.registry import register_method


def _callbacks(cfg: RDNetConfig) -> list:
    # ESE gates are input-dependent channel attention unless ASR replaced them.
    return asr_callbacks(cfg.asr, uses_asr=cfg.asr.enabled, has_input_attention=not cfg.asr.enabled)


@register_method(
    "rdnet",
    config=RDNetConfig,
    datamodule=ImageClassificationDataModule,
    callbacks=_callbacks,
)
class RDNetModule(ImageClassifier):
    config_class = RDNetConfig

    def export_spec(self) -> dict:
        m = self.cfg.model
        return {
            "target": "lightning_modules.rdnet.net:build_rdnet",
            "kwargs": {"name": m.name, "num_classes": self.num_classes, "arch": dict(m.arch),
                       "asr": self.cfg.asr.enabled},
        }

    def build_net(self, num_classes: int) -> nn.Module:
        m = self.cfg.model
        return build_rdnet(m.name, num_classes, m.drop_path_rate, m.drop_rate, m.pretrained_file, dict(m.arch),
                           asr=self.cfg.asr.enabled, asr_psi_init=self.cfg.asr.psi_init)
