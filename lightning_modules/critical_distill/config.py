"""Typed configs of critical_distill (the distillation method) and its two jobs; defaults are the papers'.

Defaults follow the DatasetCondensation / MTT code as read for the pruning paper (notes §4.2): DC/DSA 1000
iterations at lr_img 0.1, DM 20 000 at lr_img 1 (the paper YAMLs set what differs per algorithm), SGD with
momentum 0.5 on the images, ConvNet-3 width 128, batch_real 256, 20 evaluation networks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from omegaconf import MISSING

from tenfold.config import (
    CheckpointConfig,
    ExperimentConfig,
    ExportConfig,
    InferenceConfig,
    JobConfig,
    LoggerKind,
    TrainerConfig,
)


class Algorithm(enum.Enum):
    dm = "dm"  # distribution matching
    dc = "dc"  # gradient matching
    dsa = "dsa"  # gradient matching + differentiable siamese augmentation
    mtt = "mtt"  # trajectory matching


class Criterion(enum.Enum):
    """Which samples are DROPPED per class: the largest / smallest scores of an indicator, or random ones."""

    none = "none"
    random = "random"
    LossInit_large = "LossInit_large"
    LossInit_small = "LossInit_small"
    LossConverge_large = "LossConverge_large"
    LossConverge_small = "LossConverge_small"
    MonteCarlo_large = "MonteCarlo_large"
    MonteCarlo_small = "MonteCarlo_small"


class Indicator(enum.Enum):
    LossInit = "LossInit"
    LossConverge = "LossConverge"
    MonteCarlo = "MonteCarlo"


class InitMode(enum.Enum):
    real = "real"  # random real images of the KEPT pool
    noise = "noise"


class DistillSource(enum.Enum):
    digits = "digits"  # bundled scikit-learn digits, the platform's 1257/270/270 split
    cifar10 = "cifar10"  # torchvision layout: <root>/cifar-10-batches-py
    cifar100 = "cifar100"  # torchvision layout: <root>/cifar-100-python
    hf = "hf"  # HF datasets (hub name or local folder), train split in torchvision order


@dataclass
class SelectionConfig:
    criterion: Criterion = Criterion.none
    scores: str | None = None  # a score file of method=critical_scores / critical_scores_import
    drop_ratio: float | None = None  # exactly one of drop_ratio / keep_ratio (per class)
    keep_ratio: float | None = None
    keep_to: float = 1.0  # upper end of the kept window in drop-first order (the percentile experiment)
    seed: int = 0  # the random criterion's generator (not the global NumPy RNG)


@dataclass
class DistillDataConfig:
    source: DistillSource = DistillSource.digits
    root: str | None = None
    hf_name: str | None = None
    image_column: str = "img"
    label_column: str = "label"
    train_split: str = "train"
    test_split: str = "test"
    cache_dir: str | None = None
    offline: bool = True
    digits_split_seed: int = 0
    batch_size_per_device: int = 256  # batch_real: real images per class per matching step
    eval_batch_size_per_device: int | None = 256  # val/test loaders
    num_workers: int = 0
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass
class MTTConfig:
    buffer: str | None = None  # expert trajectories of THIS subset; None: train them at fit start
    num_experts: int = 100
    train_epochs: int = 50  # epochs per expert (a checkpoint after each)
    lr_teacher: float = 0.01  # expert SGD lr and the initial learnable student lr
    expert_epochs: int = 2  # M: target = theta*_{t+M}
    max_start_epoch: int = 20  # t drawn from [0, max_start_epoch)
    syn_steps: int = 50  # N student steps
    batch_syn: int | None = None  # None: the whole synthetic set per student step
    lr_lr: float = 1e-5  # SGD (momentum 0.5) on the student step size


@dataclass
class DistillModelConfig:
    algorithm: Algorithm = Algorithm.dc
    ipc: int = 1
    iterations: int = 1000
    lr_img: float = 0.1
    momentum_img: float = 0.5
    init: InitMode = InitMode.real
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"  # DSA/DM/MTT; digits: drop flip
    net_width: int = 128
    net_depth: int = 3
    lr_net: float = 0.01  # DC/DSA inner loop
    batch_train: int = 256  # DC inner loop and evaluation batches
    dc_outer_loop: int | None = None  # None: get_loops(ipc)
    dc_inner_loop: int | None = None
    eval_networks: int = 20  # N fresh evaluators at test
    eval_epochs: int | None = None  # None: 1000 with DSA augmentation, 300 without (official)
    eval_lr: float = 0.01
    val_epochs: int = 300  # the one evaluator trained at each validation
    image_log_every: int = 500  # synthetic-image grid every N steps (W&B / TensorBoard)
    mtt: MTTConfig = field(default_factory=MTTConfig)


@dataclass
class CriticalDistillConfig(ExperimentConfig):
    method: str = "critical_distill"
    model: DistillModelConfig = field(default_factory=DistillModelConfig)
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=1))
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/acc", mode="max"))
    export: ExportConfig = field(default_factory=lambda: ExportConfig(onnx=False))


# --------------------------------------------------------------------------------------------------
# The score estimation (a Trainer's predict loop, sharded by run) and the importer (a job)


@dataclass
class ScoresModelConfig:
    indicator: Indicator = Indicator.LossInit
    runs: int = 5  # R: classifiers (LossInit/LossConverge) or random subsets (MonteCarlo)
    epochs: int | None = None  # None: LossInit 2, LossConverge 30, MonteCarlo 30
    subset_fraction: float = 0.2  # MonteCarlo
    lr: float = 0.01
    batch: int = 64
    net_width: int = 128
    net_depth: int = 3
    output: str | None = None  # None: <run dir>/scores_<indicator>.json


@dataclass
class CriticalScoresConfig(InferenceConfig):
    """The score runs are `trainer.predict` batches, one run each, split between the DDP processes."""

    method: str = "critical_scores"
    logger: LoggerKind = LoggerKind.csv
    model: ScoresModelConfig = field(default_factory=ScoresModelConfig)
    data: DistillDataConfig = field(default_factory=DistillDataConfig)


@dataclass
class ImportModelConfig:
    released: str = MISSING  # the authors' <Dataset>_<Indicator>.json (a list of floats, torchvision order)
    indicator: Indicator = Indicator.LossInit
    expected_fingerprint: str | None = None  # refuse a dataset whose fingerprint differs
    output: str | None = None  # None: <run dir>/scores_<indicator>.json


@dataclass
class CriticalScoresImportConfig(JobConfig):
    method: str = "critical_scores_import"
    logger: LoggerKind = LoggerKind.csv
    model: ImportModelConfig = field(default_factory=ImportModelConfig)
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
