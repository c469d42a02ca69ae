"""`method: anomaly_aug` config; defaults are the paper's setting on MVTec AD (digest sections 2.3-2.7).

Marked [R] where the digest marks a reconstruction rather than the paper's statement.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from datamodules.anomaly_aug_mvtec import MVTecDataConfig
from lightning_modules.anomaly_aug.simulate import ClassOp, Family
from tenfold.config import CheckpointConfig, ExperimentConfig, OptimConfig, TrainerConfig


class SimulationMode(enum.Enum):
    framework = "framework"  # the paper's: transparent / opaque / NDAA / class ops, no global rotation
    draem = "draem"  # DRAEM's original: rotation p=0.3, transparent external only (the baseline)


class ScoreMode(enum.Enum):
    mean_filtered = "mean_filtered"  # DRAEM: max of the mean-filtered anomaly map
    max = "max"  # anomalib: the plain max


_ALWAYS = [ClassOp.blur, ClassOp.local_scale]
_COLOUR = [ClassOp.color_shift]
_ORIENT = [ClassOp.local_rotation, ClassOp.local_flip]


def _row(colour: bool, orientation: bool) -> list[ClassOp]:
    return (_COLOUR if colour else []) + (_ORIENT if orientation else []) + _ALWAYS


# The digest's section 2.3 table [R]: colour ops where colour is part of normality, orientation ops where a
# turned or flipped part is a defect; + the two classes of the procedural demo set.
DEFAULT_TABLE = {
    "carpet": _row(True, False), "grid": _row(False, False), "leather": _row(True, False),
    "tile": _row(True, False), "wood": _row(True, False), "bottle": _row(True, False),
    "cable": _row(True, True), "capsule": _row(True, True), "hazelnut": _row(True, False),
    "metal_nut": _row(True, True), "pill": _row(True, True), "screw": _row(False, False),
    "toothbrush": _row(True, True), "transistor": _row(True, True), "zipper": _row(False, True),
    "stripes": _row(True, False), "disc": _row(True, True),
}
MVTEC_CLASSES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
                 "tile", "toothbrush", "transistor", "wood", "zipper")


@dataclass
class SimulationConfig:
    mode: SimulationMode = SimulationMode.framework
    p_clean: float = 0.5  # DRAEM's
    # anomaly opacity beta (1 = opaque): transparent external anomalies [R]; NDAA's transparent half [R]
    transparent_beta: list[float] = field(default_factory=lambda: [0.2, 0.8])
    ndaa_beta: list[float] = field(default_factory=lambda: [0.5, 1.0])
    families: list[Family] = field(default_factory=lambda: [Family.transparent, Family.opaque, Family.ndaa,
                                                            Family.class_op])
    table: dict[str, list[ClassOp]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_TABLE.items()})
    default_ops: list[ClassOp] = field(default_factory=lambda: list(_ALWAYS))  # a class not in the table
    max_tries: int = 10  # Perlin redraws of empty masks


@dataclass
class AnomalyAugModelConfig:
    recon_width: int = 128  # DRAEM's R
    disc_width: int = 64  # DRAEM's S
    reconstruction_first: bool = True  # S's input order: DRAEM (reconstruction, image); anomalib the reverse
    split_training: bool = True  # the paper's: R on half A, S on half B with R's output detached
    ssim_window: int = 11
    focal_gamma: float = 2.0
    score: ScoreMode = ScoreMode.mean_filtered
    score_filter_size: int = 21  # DRAEM's mean filter at 256 px
    aupro_fpr_limit: float = 0.3
    log_images: int = 8  # anomaly-map overlays / simulated samples per logged grid
    simulation: SimulationConfig = field(default_factory=SimulationConfig)


@dataclass
class AnomalyAugConfig(ExperimentConfig):
    method: str = "anomaly_aug"
    model: AnomalyAugModelConfig = field(default_factory=AnomalyAugModelConfig)
    data: MVTecDataConfig = field(default_factory=MVTecDataConfig)
    # Adam 1e-4 for both sub-networks (one Adam over both: Adam is per-parameter, so this equals two), x0.1 at
    # epochs 400 and 600 of 700 (paper / anomalib; DRAEM's code: x0.2 at 80% and 90%).
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adam", lr=1e-4, weight_decay=0.0, no_weight_decay_1d=False, reference_batch_size=8,
        scheduler="multistep", decay_milestones=[400, 600], decay_rate=0.1))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(
        max_epochs=700, num_sanity_val_steps=0, check_val_every_n_epoch=10))
    # Checkpoints (and last.ckpt for resume) are written at each validation, every 10 epochs.
    # The final model is the result (DRAEM's protocol): keep checkpoints by step, never select on the test split.
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="step", mode="max"))
