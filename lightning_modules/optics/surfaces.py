"""Rotationally symmetric surfaces: the even asphere (sphere and plane are special cases) and the stop.

Sag of the even asphere, with rho^2 = x^2 + y^2, curvature c = 1/R, conic k and polynomial terms
starting at rho^4 (a rho^2 term would duplicate c, digest 2.2):

    z(rho) = c rho^2 / (1 + sqrt(1 - (1+k) c^2 rho^2)) + sum_{i>=2} a_{2i} rho^{2i}

Rays meet a surface at the closed-form root of its conic (exact for spheres and conics), refined by Newton's
method on f(t) = sag(x(t), y(t)) + d - z(t) only where polynomial terms are non-zero. All of that runs without
autograd; one final Newton step is taken with it, which injects the implicit-function gradient
dt/dtheta = -(df/dtheta)/(df/dt) at a memory cost independent of the iteration count (the dO engine's trick).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.optics.materials import Material
from lightning_modules.optics.rays import SQRT_EPS, Rays

NEWTON_MAX_ITERS = 10
NEWTON_STEP_CLAMP_MM = 5.0
# A ray whose residual |f| stays above this after Newton missed the surface (50 nm, as official).
INTERSECT_TOL_MM = 5e-5


class Surface(nn.Module):
    """Vertex at z = d (a learnable parameter), clear semi-aperture r (fixed), medium `mat2` behind it."""

    is_stop = False

    def __init__(self, d: float, r: float, mat2: Material, dtype: torch.dtype) -> None:
        super().__init__()
        self.d = nn.Parameter(torch.tensor(float(d), dtype=dtype))
        # A buffer, not a float: shape control resizes it, and checkpoints must restore it exactly.
        self.register_buffer("clear_radius", torch.tensor(float(r), dtype=torch.float64))
        self.mat2 = mat2

    @property
    def r(self) -> float:
        return float(self.clear_radius)

    @r.setter
    def r(self, value: float) -> None:
        self.clear_radius.fill_(float(value))

    def sag(self, rho2: Tensor) -> Tensor:
        raise NotImplementedError


class ApertureStop(Surface):
    """A plane that only clips (no refraction); the medium behind it is the medium in front."""

    is_stop = True

    def sag(self, rho2: Tensor) -> Tensor:
        return torch.zeros_like(rho2)

    def intersect(self, rays: Rays) -> Rays:
        t = (self.d - rays.o[..., 2]) / rays.d[..., 2]
        p = rays.o + t.unsqueeze(-1) * rays.d
        # The buffer, not `self.r` (a Python float): torch.compile traces this without a graph break.
        valid = rays.valid & (p[..., 0] ** 2 + p[..., 1] ** 2 <= (self.clear_radius**2).to(p.dtype))
        return rays.moved(torch.where(valid.unsqueeze(-1), p, rays.o), valid=valid)


class EvenAsphere(Surface):
    def __init__(self, c: float, d: float, r: float, mat2: Material, k: float = 0.0,
                 ai: list[float] | tuple[float, ...] = (), dtype: torch.dtype = torch.float64) -> None:
        super().__init__(d, r, mat2, dtype)
        self.c = nn.Parameter(torch.tensor(float(c), dtype=dtype))
        self.k = nn.Parameter(torch.tensor(float(k), dtype=dtype))
        # a4, a6, a8, ... one scalar each, so every order can have its own learning rate
        self.ai = nn.ParameterList([nn.Parameter(torch.tensor(float(a), dtype=dtype)) for a in ai])

    @property
    def is_aspheric(self) -> bool:
        return len(self.ai) > 0 or bool(self.k.detach() != 0)

    def _conic_root(self, rho2: Tensor) -> tuple[Tensor, Tensor]:
        arg = 1 - (1 + self.k) * self.c**2 * rho2
        return torch.sqrt(arg.clamp(min=SQRT_EPS)), arg > 0

    def sag(self, rho2: Tensor) -> Tensor:
        s, _ = self._conic_root(rho2)
        z = self.c * rho2 / (1 + s)
        for i, a in enumerate(self.ai, start=2):
            z = z + a * rho2**i
        return z

    def dsag_drho2(self, rho2: Tensor) -> Tensor:
        s, _ = self._conic_root(rho2)
        dz = self.c * (1 + s + (1 + self.k) * self.c**2 * rho2 / (2 * s)) / (1 + s) ** 2
        for i, a in enumerate(self.ai, start=2):
            dz = dz + i * a * rho2 ** (i - 1)
        return dz

    def in_domain(self, rho2: Tensor) -> Tensor:
        return self._conic_root(rho2)[1] & (rho2 <= self.clear_radius.to(rho2.dtype) ** 2)

    def _residual(self, rays: Rays, t: Tensor) -> tuple[Tensor, Tensor]:
        """f(t) and f'(t) along each ray."""
        o, d = rays.o, rays.d
        x, y, z = (o + t.unsqueeze(-1) * d).unbind(-1)
        rho2 = x**2 + y**2
        f = self.sag(rho2) + self.d - z
        df = self.dsag_drho2(rho2) * 2 * (x * d[..., 0] + y * d[..., 1]) - d[..., 2]
        return f, df

    def _conic_t(self, rays: Rays) -> tuple[Tensor, Tensor]:
        """Closed-form distance to the conic (sphere when k = 0) and whether the ray meets it (no autograd).

        The conic c (x^2 + y^2) + (1 + k) c z'^2 - 2 z' = 0 (z' = z - d) along o + t d is A t^2 + B t + C = 0;
        the root near the vertex is t = 2C / (-B + sqrt(B^2 - 4AC)) (stable, and -C/B for a plane).
        """
        o, d = rays.o, rays.d
        c, ck = self.c.detach(), (1 + self.k.detach()) * self.c.detach()
        oz = o[..., 2] - self.d.detach()
        a = c * (d[..., 0] ** 2 + d[..., 1] ** 2) + ck * d[..., 2] ** 2
        b = 2 * (c * (o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1]) + ck * oz * d[..., 2] - d[..., 2])
        cc = c * (o[..., 0] ** 2 + o[..., 1] ** 2) + ck * oz**2 - 2 * oz
        disc = b**2 - 4 * a * cc
        meets = disc >= 0
        t = 2 * cc / _nonzero(-b + torch.sqrt(disc.clamp(min=0)))
        return t, meets

    @property
    def is_conic(self) -> bool:
        """No polynomial term can move the surface off its conic (none, or all zero and frozen)."""
        return all(not a.requires_grad and float(a) == 0 for a in self.ai)

    def _intersect_conic(self, rays: Rays) -> Rays:
        """Spheres and conics: the closed-form root, differentiable as it is (no Newton, no extra residual)."""
        ox, oy, oz = rays.o.unbind(-1)
        dx, dy, dz = rays.d.unbind(-1)
        c = self.c
        ck = (1 + self.k) * c
        z = oz - self.d
        half_b = c * (ox * dx + oy * dy) + (ck * z - 1) * dz
        cc = c * (ox * ox + oy * oy) + (ck * z - 2) * z
        disc = half_b * half_b - (c * (dx * dx + dy * dy) + ck * dz * dz) * cc
        meets = disc.detach() >= 0
        t = cc / _nonzero(torch.sqrt(torch.where(meets, disc, torch.ones_like(disc))) - half_b)
        p = rays.o + t.unsqueeze(-1) * rays.d
        rho2 = p[..., 0] ** 2 + p[..., 1] ** 2
        valid = rays.valid & meets & torch.isfinite(t.detach()) & self.in_domain(rho2.detach())
        return rays.moved(torch.where(valid.unsqueeze(-1), p, rays.o), valid=valid)

    def intersect(self, rays: Rays) -> Rays:
        if self.is_conic:
            return self._intersect_conic(rays)
        with torch.no_grad():
            t0 = (self.d - rays.o[..., 2]) / rays.d[..., 2]  # the vertex plane
            t, meets = self._conic_t(rays)  # exact for spheres and conics
            t = torch.where(meets & torch.isfinite(t), t, t0)
            # Newton only where the polynomial terms move the surface off its conic.
            # Under torch.compile the data-dependent tests would split the graph: every iteration is run
            # instead (a converged ray's Newton step is ~0, so the result is unchanged).
            compiling = torch.compiler.is_compiling()
            if len(self.ai) if compiling else any(bool(a.detach() != 0) for a in self.ai):
                for _ in range(NEWTON_MAX_ITERS):
                    f, df = self._residual(rays, t)
                    if not compiling and not bool((f.abs() > 1e-3 * INTERSECT_TOL_MM)[rays.valid].any()):
                        break
                    t = t - (f / _nonzero(df)).clamp(-NEWTON_STEP_CLAMP_MM, NEWTON_STEP_CLAMP_MM)
            f, _ = self._residual(rays, t)
            hit = rays.valid & torch.isfinite(f) & (f.abs() < INTERSECT_TOL_MM)
            # Missed rays restart from a finite point, so nothing inf/NaN enters the graph below.
            t = torch.where(hit, t, t0)
        # The one differentiable step (see the module docstring).
        f, df = self._residual(rays, t)
        t = t - f / _nonzero(df)
        p = rays.o + t.unsqueeze(-1) * rays.d
        rho2 = p[..., 0] ** 2 + p[..., 1] ** 2
        # No t > 0 test (dropped by the official code too, PR #66): sequential tracing follows the line both
        # ways, so a surface bulging in front of a stop placed at its vertex is still met.
        valid = hit & self.in_domain(rho2.detach())
        return rays.moved(torch.where(valid.unsqueeze(-1), p, rays.o), valid=valid)

    def normal(self, p: Tensor) -> Tensor:
        """Unit normal (..., 3) at points on the surface, pointing towards -z."""
        if self.is_conic:  # the gradient of c (x^2 + y^2) + (1 + k) c z'^2 - 2 z'
            n = torch.cat([self.c * p[..., :2], ((1 + self.k) * self.c * (p[..., 2:] - self.d) - 1)], dim=-1)
            return n / n.norm(dim=-1, keepdim=True)
        x, y = p[..., 0], p[..., 1]
        g = self.dsag_drho2(x**2 + y**2)
        n = torch.stack([2 * x * g, 2 * y * g, -torch.ones_like(x)], dim=-1)
        return n / n.norm(dim=-1, keepdim=True)


def _nonzero(x: Tensor) -> Tensor:
    return torch.where(x.abs() > 1e-12, x, torch.full_like(x, 1e-12))
