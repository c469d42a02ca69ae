"""Image-side measures: pupil sampling, RMS spot radius, spot diagrams and the geometric PSF.

RMS spot radius = sqrt(sum_valid |p - c|^2 / N_valid) about the centroid c (or a given centre such as
the pinhole image point). Averaging per-ray radii instead is the known bug of official issue #102: for
a uniform disc of radius a the RMS is a / sqrt(2) = 0.7071 a, the mean radius 2a/3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_modules.optics.lens import Lens
from lightning_modules.optics.materials import WAVE_C, WAVE_D, WAVE_F
from lightning_modules.optics.rays import Rays

WAVE_RGB = (WAVE_C, WAVE_D, WAVE_F)  # red, green, blue (nm)
EPS = 1e-12


def pupil_samples(n: int, kind: str = "sunflower", generator: torch.Generator | None = None) -> Tensor:
    """(N, 2) points in the unit disc with uniform area density.

    sunflower: n deterministic points (golden-angle spiral), smooth in the lens parameters;
    random: n points stratified in r^2 (rings) and jittered in angle (fresh per call);
    square: the square grid of spacing 2/n clipped to the disc (about pi n^2 / 4 points).
    """
    if kind == "sunflower":
        i = torch.arange(n, dtype=torch.float64) + 0.5
        r, phi = torch.sqrt(i / n), i * math.pi * (3 - math.sqrt(5))
    elif kind == "random":
        u = (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)) / n
        r, phi = torch.sqrt(u), 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    elif kind == "square":
        axis = (torch.arange(n, dtype=torch.float64) + 0.5) * 2 / n - 1
        x, y = torch.meshgrid(axis, axis, indexing="xy")
        inside = x**2 + y**2 <= 1
        return torch.stack([x[inside], y[inside]], dim=-1)
    else:
        raise ValueError(f"unknown pupil sampling '{kind}' (sunflower, random, square)")
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=-1)


def rms_spot(xy: Tensor, valid: Tensor, center: Tensor | None = None) -> Tensor:
    """RMS radius (...) of hits xy (..., N, 2) over valid rays, about the centroid or `center` (..., 2)."""
    w = valid.to(xy.dtype).unsqueeze(-1)
    count = w.sum(-2).clamp(min=EPS)  # (..., 1); 0 valid rays gives 0, not 0/0
    if center is None:
        center = (w * xy).sum(-2) / count
    mean_sq = (w * (xy - center.unsqueeze(-2)) ** 2).sum((-2, -1)) / count.squeeze(-1)
    return torch.sqrt(mean_sq.clamp(min=1e-20))  # the floor (1e-10 mm) keeps the gradient finite at 0


def ideal_image_points(lens: Lens, fields: Tensor, hfov: float | None = None, foclen: float | None = None) -> Tensor:
    """(F, 2) pinhole (distortion-free, inverted) image points of normalized fields."""
    hfov = lens.hfov if hfov is None else hfov
    foclen = lens.foclen if foclen is None else foclen
    return -fields.to(lens.dtype) * foclen * math.tan(hfov)


def trace_fields(lens: Lens, fields: Tensor, depth_mm: float, wvln_nm: float, pupil: Tensor,
                 hfov: float | None = None, pupil_scale: float = 1.05,
                 pupil_radius_mm: float | None = None) -> tuple[Tensor, Tensor]:
    """Sensor hits (F, N, 2) and validity (F, N) of rays from normalized fields through `pupil` points."""
    points = lens.object_points(fields, depth_mm, hfov)
    rays = lens.trace_to_sensor(lens.rays_from_points(points, wvln_nm, pupil, pupil_scale, pupil_radius_mm))
    return rays.o[..., :2], rays.valid


def trace_fields_multi(lens: Lens, fields: Tensor, depth_mm: float, wavelengths: tuple[float, ...] | list[float],
                       pupil: Tensor, hfov: float | None = None, pupil_scale: float = 1.05,
                       pupil_radius_mm: float | None = None):
    """All wavelengths in one pass: the rays at the sensor as one (W, F, N) bundle (hits `.o[..., :2]`).

    The launch geometry (object points, entrance pupil at the d line) is the same for every wavelength, so
    the bundle is built once and expanded; each surface then refracts every wavelength with its own index.
    """
    points = lens.object_points(fields, depth_mm, hfov)
    rays = lens.rays_from_points(points, float(wavelengths[0]), pupil, pupil_scale, pupil_radius_mm)
    w = len(wavelengths)
    stacked = Rays(rays.o.expand(w, *rays.o.shape), rays.d.expand(w, *rays.d.shape),
                   rays.valid.expand(w, *rays.valid.shape), tuple(float(x) for x in wavelengths))
    return lens.trace_to_sensor(stacked)


def spot_diagram(lens: Lens, fields: Tensor, depth_mm: float, n_rays: int = 512,
                 wavelengths: tuple[float, ...] = WAVE_RGB, hfov: float | None = None) -> list[tuple[Tensor, Tensor]]:
    """Per wavelength: raw hits (F, N, 2) relative to each field's green centroid, and validity (F, N)."""
    pupil = pupil_samples(n_rays)
    with torch.no_grad():
        traced = [trace_fields(lens, fields, depth_mm, w, pupil, hfov=hfov) for w in wavelengths]
        green_xy, green_valid = traced[len(traced) // 2]
        w = green_valid.to(green_xy.dtype).unsqueeze(-1)
        centroid = (w * green_xy).sum(1) / w.sum(1).clamp(min=1)
        return [(xy - centroid.unsqueeze(1), valid) for xy, valid in traced]


def psf_binned(xy: Tensor, valid: Tensor, ks: int, pixel_size_mm: float) -> Tensor:
    """(ks, ks) PSF from hits xy (N, 2) relative to the PSF centre, bilinearly splatted, summing to 1.

    Row 0 is +y (image convention), column 0 is -x. Bilinear weights keep it differentiable in xy.
    """
    col = xy[:, 0] / pixel_size_mm + (ks - 1) / 2
    row = -xy[:, 1] / pixel_size_mm + (ks - 1) / 2
    r0, c0 = row.detach().floor(), col.detach().floor()
    fr, fc = row - r0, col - c0
    psf = torch.zeros(ks * ks, dtype=xy.dtype, device=xy.device)
    for dr, dc, weight in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                           (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = r0 + dr, c0 + dc
        inside = valid & (r >= 0) & (r < ks) & (c >= 0) & (c < ks)
        index = torch.where(inside, r * ks + c, torch.zeros_like(r)).long()
        psf = psf.index_add(0, index, torch.where(inside, weight, torch.zeros_like(weight)))
    return (psf / psf.sum().clamp(min=EPS)).view(ks, ks)


def psf_rgb(lens: Lens, field: tuple[float, float], depth_mm: float, ks: int, spp: int = 2048,
            pixel_size_mm: float | None = None) -> Tensor:
    """Geometric PSF (3, ks, ks) of a point source at normalized field (x, y) in [-1, 1]^2 (fraction of the
    half-diagonal FoV) and object depth (negative mm, -20000 = infinity), on a ks x ks grid of sensor pixels
    centred on the ideal image point, for the RGB wavelengths; each channel sums to 1 (or is all zero when
    no ray arrives). Bilinear binning keeps it differentiable with respect to the lens parameters."""
    return psf_rgb_batch(lens, torch.tensor([field], dtype=torch.float64), [depth_mm], ks, spp, pixel_size_mm)[0]


def psf_rgb_batch(lens: Lens, fields: Tensor, depths_mm: list[float], ks: int, spp: int = 2048,
                  pixel_size_mm: float | None = None) -> Tensor:
    """`psf_rgb` for many (field, depth) pairs, (F, 3, ks, ks): normalized fields (F, 2), depths (F floats).

    All point sources go through one trace per wavelength: on CPU a trace's cost is mostly per-call overhead,
    so this is several times faster than one `psf_rgb` per pair (benchmarks/deeplens_edof_render.py).
    """
    if len(depths_mm) != len(fields):
        raise ValueError(f"{len(fields)} fields but {len(depths_mm)} depths")
    pixel = lens.pixel_size_mm if pixel_size_mm is None else pixel_size_mm
    fields = fields.to(torch.float64)
    # Object points depth by depth (they sit on chief-ray directions that depend on the depth), traced together.
    points = torch.cat([lens.object_points(fields[i : i + 1], depth) for i, depth in enumerate(depths_mm)])
    centers = ideal_image_points(lens, fields)  # (F, 2) pinhole image points
    pupil = pupil_samples(spp)
    rays = lens.rays_from_points(points, WAVE_RGB[0], pupil)
    w = len(WAVE_RGB)
    rays = lens.trace_to_sensor(Rays(rays.o.expand(w, *rays.o.shape), rays.d.expand(w, *rays.d.shape),
                                     rays.valid.expand(w, *rays.valid.shape), WAVE_RGB))
    xy = rays.o[..., :2] - centers.unsqueeze(1)  # (W, F, N, 2)
    channels = [torch.stack([psf_binned(xy[c, f], rays.valid[c, f], ks, pixel) for f in range(len(fields))])
                for c in range(w)]
    return torch.stack(channels, dim=1)
