"""DeepLens's typed config; defaults are the paper's cellphone lens from flat surfaces (digest 3.1-3.5)."""

from __future__ import annotations

from dataclasses import dataclass, field

from callbacks.curriculum import CurriculumConfig, RampShape
from datamodules.design_steps import DesignStepsDataConfig
from lightning_modules.optics.materials import WAVE_C, WAVE_D, WAVE_F
from tenfold.config import CheckpointConfig, ExperimentConfig, ExportConfig, OptimConfig, TrainerConfig


@dataclass
class LensSpec:
    """What the design must achieve (the curriculum's targets)."""

    foclen: float = 4.55  # mm
    fnum: float = 2.0
    hfov_deg: float = 40.0  # half-diagonal field of view (80 deg diagonal)
    depth_mm: float = -20000.0  # object distance ("infinity" in the official code)
    wavelengths_nm: list[float] = field(default_factory=lambda: [WAVE_C, WAVE_D, WAVE_F])
    # normalized field radii along +y traced every step (the lens is rotationally symmetric)
    fields: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    pupil_scale: float = 1.05  # over-fill the entrance pupil so the stop does the clipping


@dataclass
class FlatInit:
    """A stack of flat surfaces (digest 3.4): stop first, then elements with random gaps."""

    materials: list[str] = field(default_factory=lambda: ["COC", "PS", "COC", "PS", "OKP4", "PC"])
    ttl: float = 6.37  # total track (stop to sensor), 1.4 f
    bfl: float = 0.8  # last vertex to sensor
    stop_gap: float = 0.2  # stop to the first vertex
    aspheric_terms: int = 6  # a4 ... a14 on every surface (0: spheres)
    spacing_range: list[float] = field(default_factory=lambda: [1.0, 2.0])  # drawn, then normalised


@dataclass
class InitConfig:
    prescription: str | None = None  # a JSON file to start from; None builds `flat`
    flatten: bool = True  # set every curvature, conic and aspheric term of the prescription to zero
    curvature_std: float = 1e-3  # 1/mm, N(0, std) added to every curvature (the seed's effect)
    conic_std: float = 1e-2
    d_sensor: float | None = None  # None: the last vertex + foclen (prescription) or the flat TTL
    flat: FlatInit = field(default_factory=FlatInit)


@dataclass
class OptimizeConfig:
    """Which quantities are design variables."""

    c: bool = True
    d: bool = True  # vertex positions (thicknesses and air gaps); the stop stays where it is
    k: bool = True
    ai: bool = True
    d_sensor: bool = True
    glass: bool = False  # continuous (n_d, V_d) relaxation of every glass


@dataclass
class LearningRates:
    """One Adam group per quantity (digest 3.3, the 2023 cellphone rates); lr(a_2i) = a * a_decay^(i-2)."""

    c: float = 5e-4
    d: float = 1e-4
    k: float = 1e-1
    a: float = 1e-4
    a_decay: float = 0.1
    d_sensor: float = 1e-4
    glass_n: float = 1e-4
    glass_v: float = 1e-2


@dataclass
class ConstraintConfig:
    """Hinge regularisers relu((bound - x) / bound), each with its weight (digest 2.9, cellphone values)."""

    weight: float = 0.1  # total = spot loss + weight * sum of the terms below
    air_min: float = 0.1  # mm, min axial gap in air (centre to edge)
    glass_min: float = 0.3  # mm, min glass thickness (centre to edge)
    glass_max: float = 3.0  # mm, max centre thickness
    bfl_min: float = 0.5  # mm, last surface (any height) to sensor
    ttl_max: float | None = 7.5  # mm, first vertex to sensor; null: free
    chief_ray_angle_max_deg: float = 40.0
    focal_weight: float = 1.0  # (1 - f_target / EFL_paraxial)^2 on the power, finite from flat
    thickness_weight: float = 1.0
    ttl_weight: float = 1.0
    bfl_weight: float = 1.0
    angle_weight: float = 0.05


@dataclass
class RecipeConfig:
    """How the objective samples and weights (digest 2.6-3.4). The defaults are this module's original recipe
    ([c23]/[c24]-style); `configs/deeplens_now.yaml` and `configs/deeplens_cooke_now.yaml` select the current
    official code's ([now]) choices, each of which can be switched back alone (the ablations)."""

    # list: the spec's field radii along +y; ring_arm: 2-D polar fields, ring angles hfov * beta^0.5 for beta
    # evenly spaced in [0, 1], `arms` azimuths (plus the axis), [now] 16 x 4 (32 x 8 in fine-tuning)
    fields: str = "list"
    rings: int = 16
    arms: int = 4
    finetune_rings: int = 32
    finetune_arms: int = 8
    # each: every wavelength weights fields by its own detached normalized MSE; first: the first traced
    # wavelength's weights for all ([now] curriculum, red); in fine-tuning the green channel's
    field_weight_from: str = "each"
    field_dropout: float = 0.0  # fraction of fields zeroed at random each step ([now] 0.1)
    # decay: lr(a_2i) = a * a_decay^(i-2) (today); radius: lr(a_2n) = a / max(r, 1)^(2n) per surface ([now])
    a_lr_scaling: str = "decay"
    # platform: optim.scheduler over the whole run; restarts: cosine warm restarts of period ramp/4 during
    # the curriculum, then `warmup_steps` of warm-up and a cosine decay in fine-tuning ([now])
    schedule: str = "platform"
    warmup_steps: int = 100
    # Fine-tuning stage from this step to the end (null: none): glasses snapped to the catalogue, spots
    # about the green centroid (distortion then free, held by a hinge), more fields ([now], digest 2.8, 3.1)
    finetune_from_step: int | None = None
    distortion_max: float = 0.10  # relative distortion hinge in fine-tuning (10 % cellphone, 2 % camera)
    distortion_weight: float = 0.1
    focus_weight: float = 0.0  # on-axis RGB RMS about its centroid added to the loss ([now] 0.1)


@dataclass
class DeepLensModelConfig:
    spec: LensSpec = field(default_factory=LensSpec)
    init: InitConfig = field(default_factory=InitConfig)
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    lr: LearningRates = field(default_factory=LearningRates)
    constraints: ConstraintConfig = field(default_factory=ConstraintConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    dtype: str = "float64"  # float32 is fine for geometric tracing (digest 5)
    # Trace through torch.compile (lightning_modules/optics/lens.py `compiled_trace`): 2.4x faster cellphone
    # steps after a one-off compile per ray shape (~1 min for the Cooke, 12-17 min for the cellphone lens).
    compile_trace: bool = False
    resample_rays_every: int = 1  # steps between fresh random pupil samples (50-100 in the official code)
    # Shape control every N steps (no gradient, digest 2.9): clear radii follow the rays; 0: never
    shape_control_every: int = 100
    refocus: bool = True  # ... and the sensor moves to the on-axis best focus
    # Solve the last refracting curvature for the exact paraxial EFL every step instead of penalising
    # the EFL ("c2 solved from c1", digest 7.6); that curvature is then not a free parameter.
    efl_solve: bool = False
    field_weighting: bool = True  # weight fields by their detached normalized MSE (digest 2.8, 3.2)
    visuals_every_n_steps: int = 500  # layout + spot diagrams to the loggers (at validations)


@dataclass
class DeepLensExperimentConfig(ExperimentConfig):
    method: str = "deeplens"
    model: DeepLensModelConfig = field(default_factory=DeepLensModelConfig)
    data: DesignStepsDataConfig = field(default_factory=DesignStepsDataConfig)
    # [c23]: aperture and FoV ramped together with a sine staircase of 6 stages, 1000 steps each, then
    # 5000 steps at the target. Ratios of the target entrance-pupil radius and image height.
    curriculum: CurriculumConfig = field(default_factory=lambda: CurriculumConfig(
        quantities={"aperture": [0.5, 1.0], "fov": [0.5, 1.0]}, ramp_steps=6000, stages=5,
        shape=RampShape.sine,
    ))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="adam", lr=1.0, weight_decay=0.0, scheduler="cosine", warmup_epochs=0.0, min_lr=0.0,
    ))
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=11000, log_every_n_steps=50))
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/rms_um"))
    export: ExportConfig = field(default_factory=lambda: ExportConfig(onnx=False))
