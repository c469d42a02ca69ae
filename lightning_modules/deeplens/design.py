"""Lens design by gradient descent (pure torch): the starting lens, the objective and shape control.

The objective (digest 2.8, [c24]) is, per wavelength, the RMS distance of the ray hits to the ideal
(pinhole, inverted) image point of their field, with fields weighted by their own detached normalised
MSE so that bad fields pull harder (digest 3.2); RGB losses are averaged. Hinge regularisers keep the
geometry physical: glass and air gaps, back focal length, total track, chief-ray angle; a smooth penalty
on the paraxial power pins the focal length even from flat surfaces, where the EFL is infinite.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_modules.deeplens.config import ConstraintConfig, DeepLensModelConfig, FlatInit, LensSpec
from lightning_modules.optics import ApertureStop, EvenAsphere, Lens, material_from_name
from lightning_modules.optics.materials import Air
from lightning_modules.optics.spot import pupil_samples, rms_spot, trace_fields_multi

GAP_SAMPLES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)  # fractions of the smaller clear radius


# ---- the starting lens


def initial_lens(cfg: DeepLensModelConfig, seed: int) -> Lens:
    dtype = {"float64": torch.float64, "float32": torch.float32}[cfg.dtype]
    generator = torch.Generator().manual_seed(seed)
    spec, init = cfg.spec, cfg.init
    if init.prescription is None:
        lens = flat_lens(spec, init.flat, generator, dtype)
    else:
        lens = Lens.from_json(init.prescription, dtype=dtype, key="model.init.prescription")
        if init.flatten:
            _flatten(lens)
        last = max(float(s.d) for s in lens.surfaces)
        with torch.no_grad():
            lens.d_sensor.fill_(init.d_sensor if init.d_sensor is not None else last + spec.foclen)
    if init.d_sensor is not None:
        with torch.no_grad():
            lens.d_sensor.fill_(init.d_sensor)
    with torch.no_grad():
        for surface in refracting(lens):
            surface.c += init.curvature_std * torch.randn((), generator=generator, dtype=torch.float64).item()
            if cfg.optimize.k:
                surface.k += init.conic_std * torch.randn((), generator=generator, dtype=torch.float64).item()
    if cfg.optimize.glass:
        for surface in refracting(lens):
            if not surface.mat2.is_air:
                surface.mat2 = material_from_name(surface.mat2.name, learnable=True)
    return lens


def flat_lens(spec: LensSpec, flat: FlatInit, generator: torch.Generator, dtype: torch.dtype) -> Lens:
    """Stop at z = 0, then one glass + one air gap per element, gaps a random partition of the track."""
    r_image = spec.foclen * math.tan(math.radians(spec.hfov_deg))
    r_stop = spec.foclen / (2 * spec.fnum)
    n_gaps = 2 * len(flat.materials) - 1
    low, high = flat.spacing_range
    gaps = low + (high - low) * torch.rand(n_gaps, generator=generator, dtype=torch.float64)
    gaps = gaps / gaps.sum() * (flat.ttl - flat.bfl - flat.stop_gap)
    z = flat.stop_gap + torch.cat([torch.zeros(1, dtype=torch.float64), gaps.cumsum(0)])
    surfaces = [ApertureStop(0.0, r_stop, Air(), dtype)]
    for i, zi in enumerate(z.tolist()):
        # Clear radius grows with the distance from the stop along the full-field chief ray ([now] rule).
        radius = min(r_stop + zi * math.tan(math.radians(spec.hfov_deg)), r_image) * 1.1
        mat2 = material_from_name(flat.materials[i // 2]) if i % 2 == 0 else Air()
        surfaces.append(EvenAsphere(0.0, zi, radius, mat2, ai=[0.0] * flat.aspheric_terms, dtype=dtype))
    side = 2 * r_image / math.sqrt(2)
    return Lens(surfaces, flat.ttl, (side, side), (512, 512), name="from flat", dtype=dtype)


def _flatten(lens: Lens) -> None:
    with torch.no_grad():
        for surface in refracting(lens):
            surface.c.zero_()
            surface.k.zero_()
            for a in surface.ai:
                a.zero_()


def refracting(lens: Lens) -> list[EvenAsphere]:
    return [s for s in lens.surfaces if not s.is_stop]


# ---- the current (curriculum) specification


@dataclass
class DesignState:
    """Where the curriculum stands: fractions of the target entrance-pupil radius and image height."""

    aperture: float = 1.0
    fov: float = 1.0

    def hfov(self, spec: LensSpec) -> float:
        return math.atan(self.fov * math.tan(math.radians(spec.hfov_deg)))


def set_stop_for_aperture(lens: Lens, spec: LensSpec, aperture: float) -> None:
    """Size the stop so the paraxial entrance pupil has radius aperture * f / (2 N)."""
    if lens.stop_index is None:
        return
    with torch.no_grad():
        a = lens._paraxial_matrix(587.5618, upto=lens.stop_index)[0, 0].abs()
    lens.surfaces[lens.stop_index].r = float(aperture * spec.foclen / (2 * spec.fnum) * a)


# ---- focal-length solve ("c2 solved from c1", digest 7.6)


def solve_last_curvature(lens: Lens, foclen: float) -> Tensor:
    """The last refracting surface's curvature that makes the paraxial EFL exactly `foclen` (d line).

    The power is linear in that curvature: with M' the matrix up to the surface, its refraction gives
    M[1,0] = M'[1,0] - (n2 - n1) c M'[0,0]; solving -M[1,0] = 1/f keeps the dependence on every other
    parameter, so gradients see the constraint (a Zemax-style solve, not a penalty).
    """
    index = max(i for i, s in enumerate(lens.surfaces) if not s.is_stop)
    front, behind = lens.media()[index]
    m = lens._paraxial_matrix(587.5618, upto=index)
    dn = behind.n(587.5618).to(lens.dtype) - front.n(587.5618).to(lens.dtype)
    return (m[1, 0] + 1.0 / foclen) / (dn * m[0, 0])


@contextmanager
def substituted(module: nn.Module, name: str, value: Tensor) -> Iterator[None]:
    """Use the tensor `value` in place of the parameter `module.<name>` inside the block."""
    param = module._parameters.pop(name)
    setattr(module, name, value)
    try:
        yield
    finally:
        delattr(module, name)
        module._parameters[name] = param


# ---- objective


def meridional_fields(spec: LensSpec) -> Tensor:
    return torch.tensor([[0.0, f] for f in spec.fields], dtype=torch.float64)


def ring_arm_fields(rings: int, arms: int, hfov: float) -> Tensor:
    """(1 + (rings - 1) * arms, 2) normalized 2-D fields: the axis, then rings at angles hfov * beta^0.5
    (beta evenly spaced in (0, 1]) on `arms` azimuths ([now] ring-arm sampling, digest 2.6)."""
    beta = torch.linspace(0, 1, rings, dtype=torch.float64)[1:]
    radius = torch.tan(hfov * beta.sqrt()) / math.tan(hfov) if hfov > 0 else beta.sqrt()
    phi = 2 * math.pi * torch.arange(arms, dtype=torch.float64) / arms
    xy = torch.stack([torch.outer(radius, phi.sin()), torch.outer(radius, phi.cos())], dim=-1).reshape(-1, 2)
    return torch.cat([torch.zeros(1, 2, dtype=torch.float64), xy])


@dataclass
class Objective:
    """How one step's spots are scored (RecipeConfig, resolved for the current stage)."""

    fields: Tensor  # (F, 2) normalized
    weight_from: str = "each"  # each | first | green | none
    dropout: float = 0.0
    center: str = "pinhole"  # pinhole | centroid (the green centroid of each field)
    generator: torch.Generator | None = None  # for the field dropout


@dataclass
class SpotResult:
    loss: Tensor  # the weighted RMS objective (mm), averaged over wavelengths
    rms: Tensor  # (W, F) RMS about the objective's centre
    valid: Tensor  # (W, F) fraction of rays through
    centroid: Tensor  # (W, F, 2)
    target: Tensor  # (F, 2) pinhole image points
    chief_cos: Tensor  # (F,) cosine of the chief ray's angle at the sensor (green; 1 where it is lost)


def spot_objective(lens: Lens, spec: LensSpec, state: DesignState, pupil: Tensor, objective: Objective) -> SpotResult:
    """All fields and wavelengths in one batched trace, plus each field's chief ray (the pupil centre)."""
    hfov = state.hfov(spec)
    fields = objective.fields
    target = -fields.to(lens.dtype) * spec.foclen * math.tan(hfov)  # pinhole image points (F, 2)
    pupil = torch.cat([pupil.to(torch.float64), torch.zeros(1, 2, dtype=torch.float64)])  # + the chief ray
    rays = trace_fields_multi(lens, fields, spec.depth_mm, spec.wavelengths_nm, pupil, hfov=hfov,
                              pupil_scale=spec.pupil_scale)
    xy, valid = rays.o[..., :-1, :2], rays.valid[..., :-1]  # (W, F, N, 2), (W, F, N)
    green = len(spec.wavelengths_nm) // 2
    chief_cos = torch.where(rays.valid[green, :, -1], rays.d[green, :, -1, 2], torch.ones_like(rays.d[green, :, -1, 2]))
    w = valid.to(xy.dtype)
    count = w.sum(-1).clamp(min=1)  # (W, F)
    centroid = (w.unsqueeze(-1) * xy).sum(-2) / count.unsqueeze(-1)  # (W, F, 2)
    center = target.expand_as(centroid) if objective.center == "pinhole" else centroid[green].expand_as(centroid)
    sq = ((xy - center.unsqueeze(-2)) ** 2).sum(-1) * w  # (W, F, N)
    mse = sq.sum(-1) / count  # (W, F)
    if objective.weight_from == "none":
        weight = torch.ones_like(mse)
    else:
        ref = {"each": mse, "first": mse[:1], "green": mse[green : green + 1]}[objective.weight_from]
        weight = (ref / ref.mean(-1, keepdim=True).clamp(min=1e-30)).detach().expand_as(mse)
    if objective.dropout > 0:
        keep = torch.rand(len(fields), generator=objective.generator, dtype=torch.float64) >= objective.dropout
        weight = weight * keep.to(weight.dtype)
    loss = torch.sqrt((weight.unsqueeze(-1) * sq).sum((-2, -1)) / w.sum((-2, -1)).clamp(min=1) + 1e-20).mean()
    rms = torch.sqrt(mse.clamp(min=1e-20))
    return SpotResult(loss, rms, w.mean(-1), centroid, target, chief_cos)


def spot_loss(lens: Lens, spec: LensSpec, state: DesignState, pupil: Tensor,
              field_weighting: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, RMS about the ideal points (W, F), valid fraction (W, F)) over the spec's fields and wavelengths."""
    objective = Objective(meridional_fields(spec), weight_from="each" if field_weighting else "none")
    result = spot_objective(lens, spec, state, pupil, objective)
    return result.loss, result.rms, result.valid


def distortion(result: SpotResult) -> Tensor:
    """(F,) relative radial distortion of each field's green centroid against its pinhole point (0 on axis)."""
    green = result.centroid.shape[0] // 2
    r_ideal = result.target.norm(dim=-1)
    r_real = result.centroid[green].norm(dim=-1)
    return torch.where(r_ideal > 1e-9, (r_real - r_ideal) / r_ideal.clamp(min=1e-9), torch.zeros_like(r_ideal))


def spot_rms_rgb(lens: Lens, spec: LensSpec, pupil: Tensor) -> Tensor:
    """(F,) RMS radius of all wavelengths' hits pooled, about their common centroid, at the full spec."""
    fields = meridional_fields(spec)
    hfov = math.radians(spec.hfov_deg)
    rays = trace_fields_multi(lens, fields, spec.depth_mm, spec.wavelengths_nm, pupil, hfov=hfov,
                              pupil_scale=spec.pupil_scale)
    xy, valid = rays.o[..., :2].transpose(0, 1), rays.valid.transpose(0, 1)  # (F, W, N, ..)
    return rms_spot(xy.reshape(len(fields), -1, 2), valid.reshape(len(fields), -1))


def constraint_terms(lens: Lens, spec: LensSpec, cfg: ConstraintConfig) -> dict[str, Tensor]:
    """Each regulariser (already weighted); zero when the geometry is inside its bounds."""
    # The stop only clips (it may sit on a surface), so gaps are between refracting surfaces.
    surfaces = refracting(lens)
    thickness = torch.zeros((), dtype=lens.dtype)
    for front, back in zip(surfaces[:-1], surfaces[1:]):
        radius = min(front.r, back.r)
        rho2 = torch.tensor([(f * radius) ** 2 for f in GAP_SAMPLES], dtype=lens.dtype)
        gap = (back.d + back.sag(rho2)) - (front.d + front.sag(rho2))
        in_air = front.mat2.is_air
        bound = cfg.air_min if in_air else cfg.glass_min
        thickness = thickness + torch.relu((bound - gap) / bound).max()
        if not in_air:
            thickness = thickness + torch.relu((gap[0] - cfg.glass_max) / cfg.glass_max)
    last = surfaces[-1]
    rho2 = torch.tensor([(f * last.r) ** 2 for f in GAP_SAMPLES], dtype=lens.dtype)
    bfl = lens.d_sensor - (last.d + last.sag(rho2)).max()
    terms = {
        "thickness": cfg.thickness_weight * thickness,
        "bfl": cfg.bfl_weight * torch.relu((cfg.bfl_min - bfl) / cfg.bfl_min),
        "focal": cfg.focal_weight * (1 - spec.foclen * lens.paraxial_power()) ** 2,
    }
    if cfg.ttl_max is not None:
        ttl = lens.d_sensor - lens.surfaces[0].d
        terms["ttl"] = cfg.ttl_weight * torch.relu((ttl - cfg.ttl_max) / cfg.ttl_max)
    return terms


def chief_ray_angle_term(result: SpotResult, cfg: ConstraintConfig) -> Tensor:
    """Penalty on the largest angle at the sensor of the fields' chief rays (the pupil centre)."""
    angle = torch.acos(result.chief_cos.clamp(max=1 - 1e-12))
    limit = math.radians(cfg.chief_ray_angle_max_deg)
    return cfg.angle_weight * torch.relu((angle - limit) / limit).max()


# ---- shape control (no gradient)


@torch.no_grad()
def prune_apertures(lens: Lens, spec: LensSpec, state: DesignState, margin: float = 1.05, n_rays: int = 256) -> None:
    """Clear radius of every refracting surface = height of the rays that get through the stop, plus a margin.

    Only the stop then clips the beam, so losing rays cannot lower the spot loss (digest 2.9, shape
    control). Radii stay inside each surface's conic domain.
    """
    surfaces = refracting(lens)
    saved = [s.r for s in surfaces]
    for surface in surfaces:
        surface.r = 1e4
    heights = torch.zeros(len(lens.surfaces), dtype=lens.dtype)
    fields = torch.tensor([[0.0, f] for f in spec.fields], dtype=torch.float64)
    for wvln in spec.wavelengths_nm:
        points = lens.object_points(fields, spec.depth_mm, state.hfov(spec))
        path = lens.trace_path(lens.rays_from_points(points, wvln, pupil_samples(n_rays), spec.pupil_scale))
        through = path[-1].valid
        for i, rays in enumerate(path):
            rho = rays.o[..., :2].norm(dim=-1)[through]
            if rho.numel():
                heights[i] = torch.maximum(heights[i], rho.max())
    index = {id(s): i for i, s in enumerate(lens.surfaces)}
    for surface, old in zip(surfaces, saved):
        h = float(heights[index[id(surface)]])
        surface.r = h * margin if h > 0 else old


@torch.no_grad()
def refocus(lens: Lens, spec: LensSpec, n_rays: int = 1024) -> bool:
    """Move the sensor to the plane of least on-axis RMS spot (RGB pooled); False if there is no focus."""
    fields = torch.zeros(1, 2, dtype=torch.float64)
    xs, ds = [], []
    for wvln in spec.wavelengths_nm:
        points = lens.object_points(fields, spec.depth_mm, hfov=0.0)
        rays = lens.trace(lens.rays_from_points(points, wvln, pupil_samples(n_rays), pupil_scale=1.0))
        keep = rays.valid[0]
        xs.append(rays.o[0, keep])
        ds.append(rays.d[0, keep])
    o, d = torch.cat(xs), torch.cat(ds)
    if o.shape[0] < 8:
        return False
    # Positions at z: p(z) = o_xy + (z - o_z) s with slopes s = d_xy / d_z; the RMS about the centroid
    # is quadratic in z, minimised where its derivative vanishes.
    s = d[:, :2] / d[:, 2:3]
    base = o[:, :2] - o[:, 2:3] * s
    s_c, base_c = s - s.mean(0), base - base.mean(0)
    denom = (s_c**2).sum()
    if denom < 1e-16:
        return False  # no power: parallel rays have no focus
    z = float(-(s_c * base_c).sum() / denom)
    last = max(float(sf.d) for sf in lens.surfaces)
    if not (last < z < last + 20 * spec.foclen):
        return False
    lens.d_sensor.fill_(z)
    return True
