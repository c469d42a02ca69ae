"""Typed config of `method: deeplens_edof`, the lens + restoration network trained end to end.

Defaults follow the official end-to-end recipe (digest section 4, [c24]): network AdamW lr 1e-3, betas
(0.9, 0.98); lens Adam with lrs [c, d, k, a] = [1e-4, 1e-4, 0, 0]; cosine annealing; 256 x 256 crops,
batch 8, 10 epochs, Gaussian noise sigma 1e-3; object depths 0.1 m - 10 m. What the paper's EDoF lens
itself was (element count, f, F/#), its network size, patch size and depth law are [unverified] in the
digest: the values below are documented choices, not the paper's numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from datamodules.image_patches import ImagePatchesDataConfig
from tenfold.config import CheckpointConfig, ExperimentConfig, OptimConfig, TrainerConfig


class DepthLaw(enum.Enum):
    """How the object depth of a training sample is drawn between `depth_range_mm`."""

    inverse = "inverse"  # uniform in 1/depth: defocus blur is linear in 1/depth, so every blur size is equally likely
    uniform = "uniform"  # uniform in depth (most samples far away)
    log = "log"  # uniform in log depth


class RenderMode(enum.Enum):
    psf_patch = "psf_patch"  # one PSF at the crop's field position (digest section 4, path c)
    psf_map = "psf_map"  # a grid x grid map of PSFs over the crop (path b)


class LensDtype(enum.StrEnum):
    float64 = "float64"
    float32 = "float32"


@dataclass
class LensLearningRates:
    """Per-quantity learning rates of the lens (Adam); 0 freezes that quantity."""

    c: float = 1e-4  # curvatures
    d: float = 1e-4  # vertex positions
    k: float = 0.0  # conics
    ai: float = 0.0  # even aspheric coefficients
    d_sensor: float = 1e-4  # sensor position (the official code moves it with the distance rate)


@dataclass
class RestorationNetConfig:
    """The compact NAFNet of `restoration_net.py` (official: NAFNet width 16-32)."""

    width: int = 32
    enc_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    middle_blocks: int = 1
    dec_blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])


@dataclass
class EdofModelConfig:
    # Starting lens: a prescription JSON (optics/lens.py schema). Relative paths are tried from the working
    # directory, then from the repository root.
    lens_file: str = "lightning_modules/optics/prescriptions/cooke_triplet.json"
    lens_dtype: LensDtype = LensDtype.float64
    lens_lr: LensLearningRates = field(default_factory=LensLearningRates)
    net: RestorationNetConfig = field(default_factory=RestorationNetConfig)
    render: RenderMode = RenderMode.psf_patch
    psf_grid: int = 3  # psf_map: PSFs per side of a crop
    psf_ks: int = 31  # PSF kernel size (sensor pixels, odd)
    psf_spp: int = 2048  # rays per wavelength and PSF
    depth_range_mm: list[float] = field(default_factory=lambda: [-100.0, -10000.0])  # 0.1 m .. 10 m
    depth_law: DepthLaw = DepthLaw.inverse
    # Validation/test render every crop at each of these depths and log PSNR/SSIM per depth.
    eval_depths_mm: list[float] = field(default_factory=lambda: [-100.0, -300.0, -1000.0, -3000.0, -10000.0])
    noise_sigma: float = 1e-3  # Gaussian sensor noise on the rendered image ([0, 1] scale)
    log_images: int = 4  # validation samples (sharp | rendered | restored) logged per validation


@dataclass
class EdofExperimentConfig(ExperimentConfig):
    method: str = "deeplens_edof"
    model: EdofModelConfig = field(default_factory=EdofModelConfig)
    data: ImagePatchesDataConfig = field(default_factory=ImagePatchesDataConfig)
    # The network's optimizer; the lens's parameter groups are added to it with model.lens_lr.
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adamw", lr=1e-3, betas=[0.9, 0.98], weight_decay=0.0, reference_batch_size=8, scheduler="cosine",
    ))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_epochs=10))
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/loss", mode="min"))
