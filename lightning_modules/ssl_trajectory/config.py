"""ssl_trajectory's typed config. Defaults are the paper's setting (digest §2.2-2.5): VICReg 25/25/1 (solo
semantics), projector 2048³, λ = 0.2 on the pooled feature, LARS lr 0.3 at batch 256, wd 1e-4, 10 warm-up
epochs from 3e-5, cosine, 300 epochs, 16-bit, ResNet-18 from scratch."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from datamodules.ssl_trajectory import PoseDataConfig, PoseDataSource
from tenfold.config import CheckpointConfig, ExperimentConfig, LRScaling, OptimConfig, TrainerConfig


class SSLLoss(enum.Enum):
    vicreg = "vicreg"
    simclr = "simclr"
    simsiam = "simsiam"


class FeatureLayer(enum.Enum):
    pooled = "pooled"  # the 512-d pooled feature z, before the projector (the paper's trajectory layer)
    layer3 = "layer3"  # conv3 maps: flattened for the loss, patch-normalised for kNN (the paper's pose layer)
    layer4 = "layer4"


class TrajectoryForm(enum.Enum):
    cosine = "cosine"  # the paper: -cos of the tangent-plane steps
    geodesic = "geodesic"  # (d(C,L) + d(C,R) - d(L,R))², d = arccos (the release's PoseLoss_cos)


@dataclass
class BackboneConfig:
    width: int = 64  # 64 = ResNet-18; the CPU demo narrows it
    blocks: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    # NOT the paper: the released code loads torchvision's *supervised* ImageNet ResNet-18 before SSL.
    # Set to a local resnet18-f37072fd.pth to reproduce that; None trains from scratch (the paper).
    imagenet_init: str | None = None


@dataclass
class SSLModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    loss: SSLLoss = SSLLoss.vicreg
    projector_hidden_dim: int = 2048
    projector_out_dim: int = 2048
    predictor_hidden_dim: int = 512  # SimSiam only
    # lightly's VICRegLoss averages the two variance terms; solo-learn (the paper's fork) sums them, so
    # solo's 25/25/1 is lightly's (25, 50, 1). `variance_sum: false` gives lightly's own scaling.
    vicreg_invariance: float = 25.0
    vicreg_variance: float = 25.0
    vicreg_covariance: float = 1.0
    variance_sum: bool = True
    simclr_temperature: float = 0.2  # lightly's default is 0.5
    traj_lambda: float = 0.2
    traj_layer: FeatureLayer = FeatureLayer.pooled  # the released code used layer4
    traj_form: TrajectoryForm = TrajectoryForm.cosine
    traj_eps: float = 1e-8
    # The released LARS: trust coefficient (eta) 0.02 with clipping; bias/norm excluded (optim.no_weight_decay_1d).
    lars_eta: float = 0.02
    lars_clip: bool = True


@dataclass
class EvalConfig:
    """Frozen-feature evaluation: pose kNN per category on each layer, semantic kNN and linear probe."""

    layers: list[FeatureLayer] = field(
        default_factory=lambda: [FeatureLayer.layer3, FeatureLayer.layer4, FeatureLayer.pooled]
    )
    monitor_layer: FeatureLayer = FeatureLayer.layer3  # val/pose_knn is this layer's pose kNN (the paper's best layer)
    ks: list[int] = field(default_factory=lambda: [50, 100, 200])
    temperatures: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.5, 1.0])
    online_k: int = 20  # the fixed setting of the per-epoch (validation) kNN
    online_temperature: float = 0.1
    semantic_k: int = 20
    probe_steps: int = 200
    # Relative pose (paper §2.5): a linear probe on concatenated pair features -> one of rel_pose_bins bins;
    # rel_pose_pairs pairs of views of one instance are drawn from the bank (training) and from each test set.
    relative_pose: bool = True
    rel_pose_bins: int = 50
    rel_pose_pairs: int = 4096
    triplet_examples: int = 6  # triplets shown once on the dashboards


@dataclass
class SSLTrajectoryConfig(ExperimentConfig):
    method: str = "ssl_trajectory"
    model: SSLModelConfig = field(default_factory=SSLModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data: PoseDataConfig = field(default_factory=lambda: PoseDataConfig(source=PoseDataSource.folder))
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            name="lars",
            lr=0.3,
            weight_decay=1e-4,
            momentum=0.9,
            lr_scaling=LRScaling.linear,
            reference_batch_size=256,
            scheduler="cosine",
            warmup_epochs=10,
            warmup_lr=3e-5,
            min_lr=0.0,
        )
    )
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=300, precision="16-mixed"))
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/pose_knn", mode="max"))
