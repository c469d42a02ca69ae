"""Viewpoints on the viewing sphere (paper §2.1): Fibonacci-sphere poses and reflected triplets.

A pose is a unit view vector p (camera position seen from the object's centre), y is the polar axis:
azimuth = atan2(z, x), elevation = asin(y). Pure numpy.
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


def triplet_poses(p_centre: np.ndarray, min_deg: float, max_deg: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p_L, p_C, p_R) for each centre: L within [min_deg, max_deg] of C, R its reflection through C."""
    p_left = sample_left(p_centre, min_deg, max_deg, rng)
    return p_left, np.atleast_2d(p_centre), reflect_through(p_left, np.atleast_2d(p_centre))
