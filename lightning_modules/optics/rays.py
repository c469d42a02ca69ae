"""Ray bundles and vector Snell refraction.

A bundle is any batch shape `(...)`: origins and unit directions `(..., 3)` in mm, one wavelength per
bundle, and a boolean validity mask. Rays that leave the system (clipped by an aperture, outside a
surface's domain, totally internally reflected) are marked invalid and keep their last position and
direction, so no NaN is ever produced and every average is taken over valid rays only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

# Inside square roots: keeps values and gradients finite at the domain edge (digest 2.2, 2.3).
SQRT_EPS = 1e-12


@dataclass
class Rays:
    o: Tensor  # (..., 3) origins, mm
    d: Tensor  # (..., 3) unit directions
    valid: Tensor  # (...) bool
    # One wavelength for the bundle, or a tuple of W wavelengths for a bundle (W, ...) traced in one pass.
    wvln_nm: float | tuple[float, ...]

    @property
    def shape(self) -> torch.Size:
        return self.valid.shape

    def moved(self, o: Tensor, d: Tensor | None = None, valid: Tensor | None = None) -> Rays:
        return replace(self, o=o, d=self.d if d is None else d, valid=self.valid if valid is None else valid)

    @staticmethod
    def stack(bundles: list[Rays]) -> Rays:
        """Bundles of one wavelength each (same shape) as one (W, ...) bundle."""
        return Rays(torch.stack([b.o for b in bundles]), torch.stack([b.d for b in bundles]),
                    torch.stack([b.valid for b in bundles]), tuple(float(b.wvln_nm) for b in bundles))

    def propagate_to_z(self, z: Tensor | float) -> Rays:
        """Straight-line propagation to the plane `z` (e.g. the sensor)."""
        t = (z - self.o[..., 2]) / self.d[..., 2]
        return self.moved(self.o + t.unsqueeze(-1) * self.d)


def refract(d: Tensor, normal: Tensor, eta: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Vector Snell's law: d' = eta d + (eta cos_i - sqrt(k)) N, with N facing the incoming ray.

    `eta` = n1 / n2. k < 0 is total internal reflection: the ray becomes invalid (no reflected ray
    is followed) and keeps its old direction.
    """
    normal = torch.where(((normal * d).sum(-1, keepdim=True) > 0), -normal, normal)
    cos_i = -(normal * d).sum(-1)
    k = 1 - eta**2 * (1 - cos_i**2)
    valid = valid & (k > 0)
    # Masking k before the sqrt keeps TIR rays out of the gradient instead of making it NaN.
    sqrt_k = torch.sqrt(torch.where(valid, k, torch.ones_like(k)) + SQRT_EPS)
    eta_v = eta.unsqueeze(-1) if isinstance(eta, Tensor) and eta.ndim > 0 else eta  # (W, 1, .., 1) per wavelength
    new_d = eta_v * d + (eta * cos_i - sqrt_k).unsqueeze(-1) * normal
    new_d = new_d / new_d.norm(dim=-1, keepdim=True)
    return torch.where(valid.unsqueeze(-1), new_d, d), valid
