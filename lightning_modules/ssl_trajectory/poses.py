"""Viewpoints on the viewing sphere (paper §2.1): Fibonacci-sphere poses, reflected triplets, relative poses.

A pose is a unit view vector p (camera position seen from the object's centre), y is the polar axis:
azimuth = atan2(z, x), elevation = asin(y). The camera at p looks at the centre with world y up (z near the
poles), so a view fixes a full camera rotation. Pure numpy.
"""

from __future__ import annotations

import numpy as np

GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def fibonacci_sphere(n: int) -> np.ndarray:
    """(n, 3) unit vectors: y_i = 1 - 2(i + 0.5)/n, r_i = sqrt(1 - y_i²), φ_i = i·π(3 - √5)."""
    i = np.arange(n, dtype=np.float64)
    y = 1.0 - 2.0 * (i + 0.5) / n
    r = np.sqrt(1.0 - y * y)
    phi = i * GOLDEN_ANGLE
    return np.stack([r * np.cos(phi), y, r * np.sin(phi)], axis=1)


def to_azimuth_elevation(p: np.ndarray) -> np.ndarray:
    """(..., 3) unit vectors -> (..., 2) radians (azimuth, elevation)."""
    return np.stack([np.arctan2(p[..., 2], p[..., 0]), np.arcsin(np.clip(p[..., 1], -1.0, 1.0))], axis=-1)


def from_azimuth_elevation(ae: np.ndarray) -> np.ndarray:
    az, el = ae[..., 0], ae[..., 1]
    return np.stack([np.cos(el) * np.cos(az), np.sin(el), np.cos(el) * np.sin(az)], axis=-1)


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def nearest_neighbour_angles(points: np.ndarray) -> np.ndarray:
    """For each point, the angle (degrees) to its nearest other point."""
    cos = np.clip(points @ points.T, -1.0, 1.0)
    np.fill_diagonal(cos, -np.inf)
    return np.degrees(np.arccos(cos.max(1)))


def nearest_pose(points: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Index into `poses` of the pose nearest to each of `points` (labels of out-of-domain views)."""
    return np.argmax(points @ poses.T, axis=1)


def reflect_through(p_left: np.ndarray, p_centre: np.ndarray) -> np.ndarray:
    """p_R = 2 (p_L · p_C) p_C - p_L: the slerp at t = 2 along the great circle from p_L through p_C."""
    dot = (p_left * p_centre).sum(-1, keepdims=True)
    return 2.0 * dot * p_centre - p_left


def sample_left(p_centre: np.ndarray, min_deg: float, max_deg: float, rng: np.random.Generator) -> np.ndarray:
    """A pose at a uniform angle in [min_deg, max_deg] from each centre, in a uniform tangent direction."""
    p_centre = np.atleast_2d(p_centre)
    random = rng.standard_normal(p_centre.shape)
    tangent = random - (random * p_centre).sum(1, keepdims=True) * p_centre
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    theta = np.radians(rng.uniform(min_deg, max_deg, size=(len(p_centre), 1)))
    return np.cos(theta) * p_centre + np.sin(theta) * tangent


def triplet_poses(
    p_centre: np.ndarray, min_deg: float, max_deg: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_L, p_C, p_R) for each centre: L within [min_deg, max_deg] of C, R its reflection through C."""
    p_left = sample_left(p_centre, min_deg, max_deg, rng)
    return p_left, np.atleast_2d(p_centre), reflect_through(p_left, np.atleast_2d(p_centre))


def camera_up(view: np.ndarray) -> np.ndarray:
    """The renderer's up vector for a view: world y, or world z when the camera looks (almost) along y."""
    return np.array([0.0, 1.0, 0.0]) if abs(view[1]) < 0.999 else np.array([0.0, 0.0, 1.0])


def camera_rotation(view: np.ndarray) -> np.ndarray:
    """(..., 3, 3) world-to-camera rotations: rows right, up, back (= the view vector), as in a look-at camera."""
    view = np.atleast_2d(view)
    up = np.stack([camera_up(v) for v in view])
    right = np.cross(up, view)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    return np.stack([right, np.cross(view, right), view], axis=-2)


def relative_direction(view_i: np.ndarray, view_j: np.ndarray) -> np.ndarray:
    """(N, 3): view j's camera position in view i's camera frame, R_i p_j = R_i R_jᵀ e_z.

    It depends only on the relative camera rotation R_i R_jᵀ (not on the object's canonical pose), so it is
    defined for unseen categories too; (0, 0, 1) is "the same view", +x a step to the camera's right.
    """
    return np.einsum("nij,nj->ni", camera_rotation(view_i), np.atleast_2d(view_j))


def relative_pose_bins(view_i: np.ndarray, view_j: np.ndarray, n_bins: int = 50) -> np.ndarray:
    """(N,) relative-pose class of each pair: the nearest of Fib(n_bins) to `relative_direction` (paper §2.5:
    50 bins; the release's precomputed table is not shipped, so the bins are computed here)."""
    return nearest_pose(relative_direction(view_i, view_j), fibonacci_sphere(n_bins))
