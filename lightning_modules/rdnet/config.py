"""RDNet's typed config; defaults are the paper's ImageNet-1K recipe (digest §2.6)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from datamodules.image_classification import AugmentConfig, ImageClassificationDataConfig
from lightning_modules.attention_reparam.config import ASRConfig
from lightning_modules.classification.module import ClassifierConfig, MixupConfig
from tenfold.config import CheckpointConfig, ExperimentConfig, OptimConfig, TrainerConfig, check_kwargs


class RDNetVariant(enum.StrEnum):
    rdnet_tiny = "rdnet_tiny"
    rdnet_small = "rdnet_small"
    rdnet_base = "rdnet_base"
    rdnet_large = "rdnet_large"


@dataclass
class RDNetModelConfig(ClassifierConfig):
    name: RDNetVariant = RDNetVariant.rdnet_tiny
    drop_path_rate: float | None = None  # None: the paper's per-variant rate (T .15 S .35 B .4 L .5)
    drop_rate: float = 0.0  # head dropout
    pretrained_file: str | None = None  # a local checkpoint to start from; nothing is downloaded
    arch: dict[str, Any] = field(default_factory=dict)  # timm RDNet constructor overrides
    label_smoothing: float = 0.1
    mixup: MixupConfig = field(
        default_factory=lambda: MixupConfig(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5)
    )

    def __post_init__(self) -> None:
        from timm.models.rdnet import RDNet

        check_kwargs("model.arch", self.arch, RDNet.__init__, taken=("num_classes", "drop_path_rate", "drop_rate"))


@dataclass
class RDNetConfig(ExperimentConfig):
    method: str = "rdnet"
    model: RDNetModelConfig = field(default_factory=RDNetModelConfig)
    # ASR on the ESE gates (arXiv 2304.06345): off in the RDNet paper's recipe.
    asr: ASRConfig = field(default_factory=lambda: ASRConfig(enabled=False, stripes=False))
    data: ImageClassificationDataConfig = field(
        default_factory=lambda: ImageClassificationDataConfig(
            batch_size_per_device=64, image_size=224, crop_pct=0.9, augment=AugmentConfig()
        )
    )
    # AdamW 1e-3 at global batch 512 (given explicitly, not batch-scaled), wd 0.05 off 1-D tensors,
    # cosine over 300 epochs after 20 warm-up epochs from 1e-4, floor 1e-6.
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            name="adamw", lr=1e-3, weight_decay=0.05, reference_batch_size=512, scheduler="cosine",
            warmup_epochs=20, warmup_lr=1e-4, min_lr=1e-6,
        )
    )
    # 64 per GPU x 4 GPUs x 2 accumulation steps = 512 per update; AMP as in the release.
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_epochs=300, accumulate_grad_batches=2, precision="16-mixed")
    )
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/top1", mode="max"))
