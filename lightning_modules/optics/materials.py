"""Optical materials: Sellmeier glasses from `glasses.json`, Cauchy (n_d, V_d) glasses, air.

Wavelengths are in nm at the API and converted to um where the Sellmeier formula needs them. A
`CauchyGlass` can make (n_d, V_d) learnable: the continuous glass relaxation of digest 2.4, snapped
back to the nearest catalogue entry by `nearest_catalogue_glass`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from tenfold.errors import ConfigError

CATALOGUE = Path(__file__).with_name("glasses.json")
# Fraunhofer lines (nm) that define n_d and the Abbe number V_d = (n_d - 1) / (n_F - n_C).
WAVE_D, WAVE_F, WAVE_C = 587.5618, 486.1327, 656.2725
# The official Cauchy model fits (n_d, V_d) at these rounded lines; kept so its glasses match.
CAUCHY_D, CAUCHY_F, CAUCHY_C = 587.6, 486.1, 656.3


@lru_cache(maxsize=1)
def catalogue() -> dict:
    return json.loads(CATALOGUE.read_text())


def known_materials() -> list[str]:
    cat = catalogue()
    return sorted(["air", *cat["sellmeier"], *cat["aliases"], *cat["nd_vd"]])


class Material(nn.Module):
    """A medium with a refractive index n(wavelength); subclasses implement `n`."""

    name: str

    def n(self, wvln_nm: float) -> Tensor:  # 0-d tensor, differentiable where the material is learnable
        raise NotImplementedError

    @property
    def is_air(self) -> bool:
        return False


class Air(Material):
    name = "air"

    def n(self, wvln_nm: float) -> Tensor:
        return torch.tensor(1.0, dtype=torch.float64)

    @property
    def is_air(self) -> bool:
        return True


class SellmeierGlass(Material):
    def __init__(self, name: str, coefficients: list[float]) -> None:
        super().__init__()
        self.name = name
        self.coefficients = [float(c) for c in coefficients]  # K1, L1, K2, L2, K3, L3

    def n(self, wvln_nm: float) -> Tensor:
        lam2 = (wvln_nm / 1000.0) ** 2
        k1, l1, k2, l2, k3, l3 = self.coefficients
        n2 = 1 + k1 * lam2 / (lam2 - l1) + k2 * lam2 / (lam2 - l2) + k3 * lam2 / (lam2 - l3)
        return torch.tensor(n2, dtype=torch.float64).sqrt()


class CauchyGlass(Material):
    """n = A + B / lam^2 fitted to (n_d, V_d); both may be learnable (glass optimisation)."""

    def __init__(self, n_d: float, v_d: float, learnable: bool = False, name: str | None = None) -> None:
        super().__init__()
        self.fixed_name = name
        self.n_d = nn.Parameter(torch.tensor(float(n_d), dtype=torch.float64), requires_grad=learnable)
        self.v_d = nn.Parameter(torch.tensor(float(v_d), dtype=torch.float64), requires_grad=learnable)

    @property
    def name(self) -> str:
        if self.fixed_name and not self.n_d.requires_grad:
            return self.fixed_name
        return f"{float(self.n_d):.4f}/{float(self.v_d):.2f}"

    def n(self, wvln_nm: float) -> Tensor:
        # B from the Abbe number's definition, A so that n(lam_d) = n_d (digest 2.4).
        b = (self.n_d - 1) / (self.v_d * (CAUCHY_F**-2 - CAUCHY_C**-2))
        a = self.n_d - b / CAUCHY_D**2
        return a + b / wvln_nm**2


def material_from_name(name: str, learnable: bool = False) -> Material:
    """'air', a catalogue name (N-BK7, COC, ...) or an 'n_d/V_d' string such as '1.5168/64.17'."""
    cat = catalogue()
    key = cat["aliases"].get(name, name)
    if name.lower() == "air":
        return Air()
    if key in cat["sellmeier"] and not learnable:
        return SellmeierGlass(key, cat["sellmeier"][key])
    if key in cat["nd_vd"]:
        return CauchyGlass(*cat["nd_vd"][key], learnable=learnable, name=key)
    if key in cat["sellmeier"]:  # learnable start from a Sellmeier glass: relax it to its (n_d, V_d)
        glass = SellmeierGlass(key, cat["sellmeier"][key])
        return CauchyGlass(float(glass.n(WAVE_D)), abbe_number(glass), learnable=True, name=key)
    if "/" in name:
        try:
            n_d, v_d = (float(part) for part in name.split("/"))
        except ValueError:
            pass
        else:
            return CauchyGlass(n_d, v_d, learnable=learnable)
    raise ConfigError(
        f"unknown material '{name}': use 'air', an 'n_d/V_d' pair such as '1.5168/64.17', or one of "
        f"{', '.join(known_materials())} (catalogue: {CATALOGUE})"
    )


def abbe_number(material: Material) -> float:
    n_d, n_f, n_c = (float(material.n(w)) for w in (WAVE_D, WAVE_F, WAVE_C))
    return (n_d - 1) / (n_f - n_c)


def nearest_catalogue_glass(n_d: float, v_d: float, names: list[str] | None = None) -> str:
    """The catalogue glass minimising |dn|/0.4 + |dV|/40 (the official snap after glass relaxation)."""
    candidates = names or [n for n in known_materials() if n != "air"]

    def distance(name: str) -> float:
        glass = material_from_name(name)
        return abs(float(glass.n(WAVE_D)) - n_d) / 0.4 + abs(abbe_number(glass) - v_d) / 40

    return min(candidates, key=distance)
