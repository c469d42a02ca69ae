"""Trajectory regularization (arXiv 2403.14973, §3 of the ECCV version): three views L -> C -> R taken at
equal small steps along a camera path should map to a locally straight path on the unit hypersphere.

    z = x / ||x||                                   features L2-normalised per row
    v1 = z_C - z_L,  v2 = z_R - z_C                 forward differences along the path
    u_i = v_i - (v_i . z_C) z_C                     projected onto the tangent plane of the sphere at z_C
    L_traj = -(u1 . u2) / (||u1|| ||u2|| + eps)     -1: ordered geodesic step, +1: folds back, 0: turns 90°

Everything is row-wise, O(B·D): the released code forms the B×B matrix U1 U2ᵀ and keeps its diagonal
(`official_pose_loss`, kept only to measure and to document its sign; see the README).
Without the tangent projection an ordered great-circle triplet at step θ would score only -cos θ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _normalise(x: Tensor, eps: float) -> Tensor:
    # (B, ...) -> (B, D), each row on the unit sphere; a zero row stays zero (no NaN).
    return F.normalize(x.flatten(1), dim=1, eps=eps)


def tangent_differences(z_l: Tensor, z_c: Tensor, z_r: Tensor) -> tuple[Tensor, Tensor]:
    """u1, u2: the two path steps projected onto the tangent plane at the (unit) centre z_c; (B, D) each."""
    v1, v2 = z_c - z_l, z_r - z_c
    u1 = v1 - (v1 * z_c).sum(1, keepdim=True) * z_c
    u2 = v2 - (v2 * z_c).sum(1, keepdim=True) * z_c
    return u1, u2


def trajectory_cosine(x_l: Tensor, x_c: Tensor, x_r: Tensor, eps: float = 1e-8, project: bool = True) -> Tensor:
    """Per-triplet -cos(u1, u2) in [-1, 1], shape (B,). Raw features in; any shape (B, ...)."""
    z_l, z_c, z_r = (_normalise(x, eps) for x in (x_l, x_c, x_r))
    if project:
        u1, u2 = tangent_differences(z_l, z_c, z_r)
    else:
        u1, u2 = z_c - z_l, z_r - z_c
    return -(u1 * u2).sum(1) / (u1.norm(dim=1) * u2.norm(dim=1) + eps)


def trajectory_geodesic(x_l: Tensor, x_c: Tensor, x_r: Tensor, eps: float = 1e-6) -> Tensor:
    """Geodesic triangle-equality variant, per triplet (B,): (d(C,L) + d(C,R) - d(L,R))², d = arccos.

    Zero whenever z_C lies on the shorter arc between z_L and z_R (the released `PoseLoss_cos` form).
    The cosine is clamped inside (-1, 1) so arccos keeps a finite gradient at coincident points.
    """
    z_l, z_c, z_r = (_normalise(x, 1e-8) for x in (x_l, x_c, x_r))

    def dist(a: Tensor, b: Tensor) -> Tensor:
        return torch.arccos((a * b).sum(1).clamp(-1 + eps, 1 - eps))

    return (dist(z_c, z_l) + dist(z_c, z_r) - dist(z_l, z_r)).square()


def trajectory_loss(x_l: Tensor, x_c: Tensor, x_r: Tensor, geodesic: bool = False, eps: float = 1e-8) -> Tensor:
    """The batch mean of the per-triplet loss: the paper's -cos form, or the geodesic variant."""
    per_triplet = trajectory_geodesic(x_l, x_c, x_r) if geodesic else trajectory_cosine(x_l, x_c, x_r, eps)
    return per_triplet.mean()


def official_pose_loss(x_l: Tensor, x_c: Tensor, x_r: Tensor) -> Tensor:
    """The released snapshot's `PoseLoss` (unnormalised, B×B form), for the benchmark and the sign test only.

    It returns mean(u1 · u2) through diag(U1 U2ᵀ), and the release *adds* it: minimising it folds triplets back.
    """
    z_l, z_c, z_r = (F.normalize(x.flatten(1), dim=1) for x in (x_l, x_c, x_r))
    u1, u2 = tangent_differences(z_l, z_c, z_r)
    return torch.diagonal(u1 @ u2.T).mean()
