"""ASR's typed configs; defaults are the official CIFAR-100 ResNet164 recipe (digest §3.4)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from datamodules.image_classification import AugmentConfig, CropMode, DataSource, ImageClassificationDataConfig
from lightning_modules.attention_reparam.config import ASRConfig
from lightning_modules.classification.module import ClassifierConfig
from tenfold.config import CheckpointConfig, ExperimentConfig, OptimConfig, TrainerConfig

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2023, 0.1994, 0.2010]


class Attention(enum.StrEnum):  # the keys of attention_reparam.attention.ATTENTIONS
    se = "se"
    ese = "ese"


class ResNetVariant(enum.StrEnum):
    baseline = "baseline"
    se = "se"
    asr = "asr"  # ASR(SE): SE on a learnable input psi, folded into bn3 at export
    asr_se = "asr_se"  # ASR(SE) + SE


@dataclass
class ResNetASRModelConfig(ClassifierConfig):
    variant: ResNetVariant = ResNetVariant.asr
    depth: int = 164  # 9n+2
    attention: Attention = Attention.se  # the attention module ASR wraps


@dataclass
class ASRExperimentConfig(ExperimentConfig):
    method: str = "asr"
    model: ResNetASRModelConfig = field(default_factory=ResNetASRModelConfig)
    asr: ASRConfig = field(default_factory=ASRConfig)
    data: ImageClassificationDataConfig = field(
        default_factory=lambda: ImageClassificationDataConfig(
            source=DataSource.hf,
            hf_name="uoft-cs/cifar100",
            image_column="img",
            label_column="fine_label",
            val_split="test",  # the official script selects and reports on the test set
            image_size=32,
            crop_pct=1.0,
            mean=list(CIFAR_MEAN),
            std=list(CIFAR_STD),
            batch_size_per_device=128,
            eval_batch_size_per_device=100,
            augment=AugmentConfig(crop=CropMode.pad, padding=4, hflip=0.5, auto_augment=None, re_prob=0.0),
        )
    )
    # SGD momentum 0.9 without Nesterov (timm's "momentum"), lr 0.1, x0.1 at epochs 81 and 122, wd 1e-4
    # on every parameter (psi and attention included).
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            name="momentum", lr=0.1, momentum=0.9, weight_decay=1e-4, no_weight_decay_1d=False,
            reference_batch_size=128, scheduler="multistep", decay_milestones=[81, 122], decay_rate=0.1,
        )
    )
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=164))
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/top1", mode="max"))
