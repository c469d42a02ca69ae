"""Typed configs of the two registered names: `gan_fingerprint_gan` (train a DCGAN) and `gan_fingerprint`
(fingerprint, embed, register, verify, attack).

The paper's hyperparameters are not available (digest section 0): every default below is the digest's
reconstruction [R] (section 4 for the designs, section 12 for the digits scale-down), not a paper value.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from omegaconf import MISSING

from datamodules.gan_fingerprint import FingerprintDataConfig, GanDataConfig
from tenfold.config import CheckpointConfig, ExperimentConfig, OptimConfig


@dataclass
class DCGANConfig:
    z_dim: int = 32
    width: int = 64  # generator base channels (2w at 2x2, w at 4x4)


def _gan_optim() -> OptimConfig:
    # DCGAN: Adam 2e-4, betas (0.5, 0.999), no decay, constant LR, for both G and D.
    return OptimConfig(
        name="adam", lr=2e-4, betas=[0.5, 0.999], weight_decay=0.0, no_weight_decay_1d=False, scheduler="none"
    )


@dataclass
class GanConfig(ExperimentConfig):
    model: DCGANConfig = field(default_factory=DCGANConfig)
    data: GanDataConfig = field(default_factory=GanDataConfig)
    optim: OptimConfig = field(default_factory=_gan_optim)
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/pixel_fid"))


class Design(enum.Enum):
    ae = "ae"  # CFP-AE: adversarial examples of C0 o G; C* = C0
    ibd_v1 = "ibd_v1"  # CFP-iBDv1: invisible backdoor fine-tuned into C with reference generators
    ibd_v2 = "ibd_v2"  # CFP-iBDv2: v1 + surrogate attacked copies, triplet loss, fine-grained head


@dataclass
class AEConfig:
    """CFP-AE's PGD on the latent [R: digest 4.1]."""

    eps: float = 0.5
    steps: int = 100
    step_size: float = 0.02
    l2_weight: float = 0.01
    confidence: float = 0.9
    candidates_per_fingerprint: int = 4


@dataclass
class EmbedConfig:
    """The embedding loss of iBDv1/v2 [R: weights all 1, digest 4.3] and its output augmentation."""

    lambda_fp: float = 1.0
    lambda_neg: float = 1.0
    lambda_sur: float = 1.0
    lambda_tri: float = 1.0
    lambda_fine: float = 1.0
    margin: float = 1.0
    # [R, not in the paper] distillation from C0 on the clean batch (learning without forgetting, T = 2):
    # 0 = the paper's loss; the demo uses 1 (clean-accuracy study in the method README)
    lambda_distill: float = 0.0
    augment_noise: float = 0.05
    augment_blur_prob: float = 0.25
    augment_quant_prob: float = 0.25
    augment_quant_levels: int = 8
    # v2's surrogate attacked copies of G (digest: short fine-tuning, 20-50% pruning, small weight noise)
    surrogate_prune: list[float] = field(default_factory=lambda: [0.2, 0.35, 0.5])
    surrogate_weight_noise: list[float] = field(default_factory=lambda: [0.05])
    surrogate_finetune_seeds: list[int] = field(default_factory=lambda: [901])
    surrogate_finetune_iterations: int = 100
    # the kept checkpoint: best val accuracy among epochs with val r_protected >= this (checkpoint.monitor=val/select)
    select_min_r: float = 0.95


@dataclass
class VerifyConfig:
    alpha: float = 1e-6
    p0: float | None = None  # None: estimated from the held-out independent generators (upper CI end)
    ci_level: float = 0.95


@dataclass
class AttackConfig:
    prune: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    finetune_seeds: list[int] = field(default_factory=lambda: [11, 12, 13])
    finetune_iterations: int = 500
    finetune_lr: float = 1e-4
    noise: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    blur: list[int] = field(default_factory=lambda: [3, 5])
    jpeg: list[int] = field(default_factory=lambda: [90, 75, 50])
    quantise: list[int] = field(default_factory=lambda: [16, 8, 4])
    fid_samples: int = 500


@dataclass
class FingerprintModelConfig:
    design: Design = Design.ibd_v2
    # The owner's secret: every fingerprint input and label is derived from it. "secret" in the name makes
    # the platform redact it in checkpoints and W&B.
    secret_key: str = MISSING
    num_fingerprints: int = 100
    # image-to-image tasks: L_inf size of the key-derived trigger added to the natural inputs, on the [-1, 1]
    # scale (8/255 here = 4/255 on [0, 1], imperceptible) [R]
    trigger_eps: float = 8 / 255
    ae: AEConfig = field(default_factory=AEConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    nonce: str | None = None  # None: fresh randomness at registration (set only to reproduce a commitment)


def _embed_optim() -> OptimConfig:
    # Fine-tuning C: Adam, cosine to 0 (a constant LR leaves the clean accuracy noisy at the end) [R].
    return OptimConfig(name="adam", lr=1e-3, weight_decay=0.0, no_weight_decay_1d=False, scheduler="cosine")


@dataclass
class FingerprintConfig(ExperimentConfig):
    model: FingerprintModelConfig = field(default_factory=FingerprintModelConfig)
    data: FingerprintDataConfig = field(default_factory=FingerprintDataConfig)
    optim: OptimConfig = field(default_factory=_embed_optim)
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/select", mode="max"))
