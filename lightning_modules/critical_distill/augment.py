"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021), with its randomness from a seeded generator.

The official code seeds DSA from the clock (`int(time.time() * 1000) % 100000`), so no run repeats. Here
`sample_transform(strategy, generator)` draws ONE transform (mode 'S': one op picked from the strategy, as in
ParamDiffAug) and its parameters from a `torch.Generator`; `apply_transform(x, t)` applies that same transform
to every image of a batch, differentiably, so a real and a synthetic batch get the identical augmentation
(the "siamese" part). Parameter ranges are ParamDiffAug's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass(frozen=True)
class DSARanges:
    prob_flip: float = 0.5
    ratio_scale: float = 1.2
    ratio_rotate: float = 15.0  # degrees
    ratio_crop_pad: float = 0.125
    ratio_cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def parse_strategy(strategy: str) -> list[str]:
    ops = [op for op in strategy.split("_") if op]
    unknown = [op for op in ops if op not in OPS]
    if unknown or not ops:
        raise ValueError(f"DSA strategy '{strategy}': unknown op(s) {unknown}; use '_'-joined ops from {OPS}")
    return ops


def _uniform(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


def _randint(low: int, high: int, g: torch.Generator) -> int:
    return int(torch.randint(low, high, (), generator=g))


def sample_transform(
    strategy: str, image_size: int, generator: torch.Generator, ranges: DSARanges = DSARanges()
) -> dict:
    """One op of `strategy` and its (scalar) parameters, all drawn from `generator`."""
    ops = parse_strategy(strategy)
    op = ops[_randint(0, len(ops), generator)]
    g, r = generator, ranges
    if op == "color":
        return {
            "op": op,
            "brightness": (_uniform(g) - 0.5) * r.brightness,
            "saturation": _uniform(g) * r.saturation,
            "contrast": _uniform(g) + r.contrast,
        }
    if op == "crop":
        shift = int(image_size * r.ratio_crop_pad + 0.5)
        return {"op": op, "shift": shift, "dx": _randint(-shift, shift + 1, g), "dy": _randint(-shift, shift + 1, g)}
    if op == "cutout":
        cut = int(image_size * r.ratio_cutout + 0.5)
        high = image_size + (1 - cut % 2)
        return {"op": op, "cut": cut, "ox": _randint(0, high, g), "oy": _randint(0, high, g)}
    if op == "flip":
        return {"op": op, "flip": _uniform(g) < r.prob_flip}
    if op == "scale":
        lo = 1.0 / r.ratio_scale
        return {"op": op, "sx": _uniform(g) * (r.ratio_scale - lo) + lo, "sy": _uniform(g) * (r.ratio_scale - lo) + lo}
    angle = (_uniform(g) - 0.5) * 2 * r.ratio_rotate / 180 * math.pi
    return {"op": "rotate", "angle": angle}


def _affine(x: Tensor, theta: list[list[float]]) -> Tensor:
    mat = torch.tensor(theta, dtype=x.dtype, device=x.device).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(mat, list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def apply_transform(x: Tensor, t: dict) -> Tensor:
    """`x` (B, C, H, W) under transform `t` (from `sample_transform`), the same for every image."""
    op = t["op"]
    if op == "color":
        x = x + t["brightness"]
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * t["saturation"] + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * t["contrast"] + mean
    if op == "crop":  # translate by (dx, dy) pixels, zero fill
        s, h, w = t["shift"], x.shape[2], x.shape[3]
        padded = F.pad(x, (s, s, s, s))
        return padded[:, :, s + t["dy"] : s + t["dy"] + h, s + t["dx"] : s + t["dx"] + w]
    if op == "cutout":
        h, w, cut = x.shape[2], x.shape[3], t["cut"]
        rows = (torch.arange(cut, device=x.device) + t["oy"] - cut // 2).clamp(0, h - 1)
        cols = (torch.arange(cut, device=x.device) + t["ox"] - cut // 2).clamp(0, w - 1)
        mask = torch.ones(h, w, dtype=x.dtype, device=x.device)
        mask[rows.unsqueeze(1), cols.unsqueeze(0)] = 0
        return x * mask
    if op == "flip":
        return x.flip(3) if t["flip"] else x
    if op == "scale":
        return _affine(x, [[t["sx"], 0.0, 0.0], [0.0, t["sy"], 0.0]])
    a = t["angle"]
    return _affine(x, [[math.cos(a), math.sin(-a), 0.0], [math.sin(a), math.cos(a), 0.0]])


def dsa(x: Tensor, strategy: str, generator: torch.Generator) -> Tensor:
    """One fresh transform from `generator`, applied to the batch (evaluator / expert training)."""
    return apply_transform(x, sample_transform(strategy, x.shape[-1], generator))
