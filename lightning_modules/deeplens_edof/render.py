"""Image simulation through a lens by PSF convolution (DeepLens digest section 4, paths (b) and (c)).

Pure torch. An incoherent imaging system maps a sharp image x to y = x (*) psf, a true convolution (no
kernel flip, unlike `conv2d`'s cross-correlation). Borders are reflect-padded so a patch is not darkened
at its edges by zeros that the real scene does not contain.

The convolution is computed with FFTs. The result is the same as `conv2d` with the flipped kernel, but
end-to-end training needs the gradient with respect to the kernel (the lens), and conv2d's weight
gradient for a large per-channel kernel is slow on CPU (about 0.65 s for 8 crops of 64 px with a 25 px
kernel, against milliseconds with FFTs).

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
    radius = _check_kernel(psf, image)
    padded = F.pad(image, (radius,) * 4, mode="reflect")
    return convolve_valid(padded, psf if psf.dim() == 4 else psf.unsqueeze(0))


def convolve_valid(padded: Tensor, kernels: Tensor) -> Tensor:
    """True 2-D convolution of every channel with its kernel, keeping only the fully overlapped ("valid")
    part: (B, C, h + ks - 1, w + ks - 1) with kernels (B or 1, C, ks, ks) -> (B, C, h, w)."""
    ks = kernels.shape[-1]
    size = (padded.shape[-2] + ks - 1, padded.shape[-1] + ks - 1)  # no circular wrap-around
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(kernels.to(padded.dtype), s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    return full[..., ks - 1 : padded.shape[-2], ks - 1 : padded.shape[-1]]


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
            out_row.append(convolve_valid(tile, psf_map[i, j].unsqueeze(0)))
        out_rows.append(torch.cat(out_row, dim=-1))
    return torch.cat(out_rows, dim=-2)


def add_sensor_noise(image: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """Additive Gaussian read noise (the official recipe uses sigma 1e-3 on [0, 1] images)."""
    if sigma <= 0:
        return image
    device = generator.device if generator is not None else image.device
    noise = torch.randn(image.shape, generator=generator, device=device, dtype=image.dtype)
    return image + sigma * noise.to(image.device)
