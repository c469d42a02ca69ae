"""Image simulation through a `Lens`: from a crop's position on the sensor and an object depth to its PSF.

Pure torch. Geometry: the square scene (datamodules/image_patches.py) fills the sensor's shorter side, one
scene pixel per PSF pixel, so the PSF pitch is side / image_size. A crop's field (x right, y up, 1 = half the
scene side) becomes the optics' normalised field (1 = half the sensor diagonal) by side / (2 r_sensor).

The optics return PSFs in sensor coordinates, where the image is inverted. Cameras show the image upright
(rotated by 180 degrees), so the kernel that blurs the upright scene is the sensor PSF rotated by 180 degrees;
for a rotationally symmetric lens this only matters off axis (e.g. the side a coma tail points to).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_modules.deeplens_edof.config import DepthLaw, RenderMode
from lightning_modules.deeplens_edof.render import render_psf, render_psf_map
from lightning_modules.optics import Lens, psf_rgb_batch


@dataclass(frozen=True)
class SensorGeometry:
    pixel_size_mm: float  # PSF and image pixel pitch on the sensor
    field_scale: float  # scene-normalised field -> lens-normalised field

    @classmethod
    def of(cls, lens: Lens, image_size: int) -> SensorGeometry:
        side_mm = min(lens.sensor_size_mm)
        return cls(pixel_size_mm=side_mm / image_size, field_scale=side_mm / (2 * lens.r_sensor))


def sample_depths(n: int, depth_range_mm: list[float] | tuple[float, float], law: DepthLaw,
                  generator: torch.Generator | None = None) -> list[float]:
    """`n` object depths (negative mm) between the two ends of `depth_range_mm`, drawn by `law`."""
    near, far = sorted((abs(depth_range_mm[0]), abs(depth_range_mm[1])))
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if law is DepthLaw.uniform:
        distance = near + (far - near) * u
    elif law is DepthLaw.log:
        distance = torch.exp(math.log(near) + (math.log(far) - math.log(near)) * u)
    else:  # inverse: uniform in 1/depth
        distance = 1 / (1 / near + (1 / far - 1 / near) * u)
    return [-float(d) for d in distance]


def upright_psfs(lens: Lens, fields_xy: Tensor, depths_mm: list[float], ks: int, spp: int,
                 geometry: SensorGeometry) -> Tensor:
    """(F, 3, ks, ks) kernels blurring the upright scene at scene-normalised fields (F, 2) and depths."""
    psfs = psf_rgb_batch(lens, fields_xy * geometry.field_scale, depths_mm, ks, spp, geometry.pixel_size_mm)
    return psfs.flip(-2, -1)


def psf_map_fields(center: tuple[float, float], grid: int, extent: float) -> list[list[tuple[float, float]]]:
    """Scene-normalised fields of the grid x grid tile centres of a crop (rows top to bottom).

    `extent` is the crop side as a fraction of the scene side."""
    offsets = [((i + 0.5) / grid * 2 - 1) * extent for i in range(grid)]
    return [[(center[0] + dx, center[1] - dy) for dx in offsets] for dy in offsets]


def render_through_lens(lens: Lens, images: Tensor, fields: Tensor, depths: list[float], *, ks: int, spp: int,
                        geometry: SensorGeometry, mode: RenderMode = RenderMode.psf_patch, grid: int = 3,
                        image_size: int | None = None) -> Tensor:
    """Blur crops (B, 3, P, P) at their fields (B, 2) and object depths (B floats) through `lens`.

    psf_patch: one PSF per crop at its centre. psf_map: `grid` x `grid` PSFs over the crop (needs the
    scene side `image_size` to place the tiles)."""
    fields = fields.detach().cpu().to(torch.float64)
    if mode is RenderMode.psf_patch:
        return render_psf(images, upright_psfs(lens, fields, depths, ks, spp, geometry).to(images.device))
    if image_size is None:
        raise ValueError("render mode psf_map needs image_size to place the PSF tiles of a crop")
    tiles = torch.tensor([psf_map_fields(tuple(f), grid, images.shape[-1] / image_size) for f in fields.tolist()],
                         dtype=torch.float64)  # (B, grid, grid, 2)
    tile_depths = [d for d in depths for _ in range(grid * grid)]
    psfs = upright_psfs(lens, tiles.reshape(-1, 2), tile_depths, ks, spp, geometry).to(images.device)
    psf_maps = psfs.reshape(len(images), grid, grid, *psfs.shape[1:])
    return torch.cat([render_psf_map(image.unsqueeze(0), psf_map) for image, psf_map in zip(images, psf_maps)])
