"""Image simulation through a lens by PSF convolution (DeepLens digest section 4, paths (b) and (c)).

Pure torch. An incoherent imaging system maps a sharp image x to y = x (*) psf, a true convolution:
`conv2d` computes a cross-correlation, so every kernel is flipped first. Borders are reflect-padded so a
patch is not darkened at its edges by zeros that the real scene does not contain.

- `render_psf`: one PSF per image (the "psf_patch" path: a random crop sees the lens's PSF at the
  crop's field position and the sampled object depth). Cheapest; exact when the PSF barely varies
  over the crop.
- `render_psf_map`: a grid x grid map of PSFs; each image tile is convolved with its own PSF. Every
  tile is read with a border of the kernel radius from its neighbours, so with identical PSFs the
  result equals one global convolution exactly (no seams).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_kernel(psf: Tensor, image: Tensor) -> int:
    ks = psf.shape[-1]
    if psf.shape[-2] != ks or ks % 2 == 0:
        raise ValueError(f"PSF kernels must be square with an odd size, got {tuple(psf.shape[-2:])}")
    radius = ks // 2
    if radius >= min(image.shape[-2:]):
        # reflect padding needs the image to be larger than the padding
        raise ValueError(f"PSF radius {radius} px is too large for an image of {tuple(image.shape[-2:])} px")
    return radius


def render_psf(image: Tensor, psf: Tensor) -> Tensor:
    """Blur `image` (B, C, H, W) with `psf`, (C, ks, ks) shared by the batch or (B, C, ks, ks) per image."""
    batch, channels, height, width = image.shape
    radius = _check_kernel(psf, image)
    kernels = psf.expand(batch, channels, -1, -1) if psf.dim() == 3 else psf
    kernels = kernels.flip(-2, -1).reshape(batch * channels, 1, *psf.shape[-2:]).to(image.dtype)
    padded = F.pad(image, (radius,) * 4, mode="reflect")
    # Every (image, channel) pair is its own group: one conv2d call for the whole batch.
    blurred = F.conv2d(padded.reshape(1, batch * channels, *padded.shape[-2:]), kernels, groups=batch * channels)
    return blurred.reshape(batch, channels, height, width)


def tile_bounds(size: int, grid: int) -> list[int]:
    """Edges of `grid` near-equal tiles along an axis of `size` pixels."""
    if grid < 1 or grid > size:
        raise ValueError(f"a PSF grid of {grid} tiles does not fit an axis of {size} px")
    return [round(i * size / grid) for i in range(grid + 1)]


def render_psf_map(image: Tensor, psf_map: Tensor) -> Tensor:
    """Blur `image` (B, C, H, W) with a spatially varying PSF map (grid_y, grid_x, C, ks, ks).

    Tile (i, j) of the output (rows top to bottom, columns left to right) is the convolution of the
    image with psf_map[i, j] evaluated over that tile.
    """
    grid_y, grid_x = psf_map.shape[:2]
    radius = _check_kernel(psf_map, image)
    padded = F.pad(image, (radius,) * 4, mode="reflect")
    rows, cols = tile_bounds(image.shape[-2], grid_y), tile_bounds(image.shape[-1], grid_x)
    out_rows = []
    for i in range(grid_y):
        out_row = []
        for j in range(grid_x):
            # The tile plus a border of `radius` real (or reflected) pixels: a "valid" conv gives the tile.
            tile = padded[..., rows[i] : rows[i + 1] + 2 * radius, cols[j] : cols[j + 1] + 2 * radius]
            out_row.append(_valid_conv(tile, psf_map[i, j]))
        out_rows.append(torch.cat(out_row, dim=-1))
    return torch.cat(out_rows, dim=-2)


def _valid_conv(tile: Tensor, psf: Tensor) -> Tensor:
    """Per-channel convolution without padding: (B, C, h + 2r, w + 2r) -> (B, C, h, w)."""
    channels = tile.shape[1]
    kernels = psf.flip(-2, -1).unsqueeze(1).to(tile.dtype)  # (C, 1, ks, ks)
    return F.conv2d(tile, kernels, groups=channels)


def add_sensor_noise(image: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Additive Gaussian read noise (the official recipe uses sigma 1e-3 on [0, 1] images)."""
    if sigma <= 0:
        return image
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    return image + sigma * noise
