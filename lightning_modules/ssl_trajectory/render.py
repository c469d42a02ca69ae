"""Headless CPU renders of real meshes from pybullet_data with pybullet's TinyRenderer.

The paper renders ShapeNet with PyTorch3D (flat shading, black background, point light); here the meshes
that ship inside the `pybullet_data` wheel stand in (no download, no GPU). A view is a unit vector p on
the viewing sphere: the camera sits at centre + distance·p and looks at the object's bounding-box centre.
The segmentation buffer makes the background exactly black.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lightning_modules.ssl_trajectory.poses import camera_up, fibonacci_sphere
from tenfold.errors import ConfigError

# Real meshes bundled with pybullet_data (paths relative to pybullet_data.getDataPath()).
MESHES: dict[str, str] = {
    "duck": "duck.obj",  # textured (duckCM.png)
    "teddy": "teddy2_VHACD_CHs.obj",
    "bunny": "bunny.obj",
    "mug": "objects/mug.obj",
    "jenga": "jenga/jenga.obj",  # a cube with a lettered texture on every face
    "torus": "torus/torus_textured.obj",  # textured: the texture breaks the rotation symmetry
    "lego": "lego/lego.obj",  # a 2x2 brick: 90° symmetric, no pose (the generator refuses it)
    "cube": "cube.obj",  # untextured: no pose
    "sphere": "sphere_smooth.obj",  # no pose
    "soccerball": "soccerball.obj",
}
LIGHT = np.array([1.0, 2.0, 1.5])
FOV_DEG = 45.0
DISTANCE = 2.6  # camera distance in bounding-sphere radii: the object fills most of the frame


def mesh_path(category: str) -> str:
    import pybullet_data

    root = pybullet_data.getDataPath()
    if category.startswith("blob_") and category[5:].isdigit() and 0 <= int(category[5:]) < 1000:
        number = f"{int(category[5:]):03d}"  # pybullet_data's 1000 procedurally generated meshes
        return os.path.join(root, "random_urdfs", number, f"{number}.obj")
    if category not in MESHES:
        raise ConfigError(
            f"unknown mesh '{category}' in data.generate categories; known: {', '.join(MESHES)}, blob_0 ... blob_999"
        )
    return os.path.join(root, MESHES[category])


def mesh_bounds(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds of an OBJ file's vertices (pybullet has none for a visual-only body)."""
    with open(path) as fh:
        vertices = np.array([[float(x) for x in line.split()[1:4]] for line in fh if line.startswith("v ")])
    return vertices.min(0), vertices.max(0)


@dataclass
class Instance:
    """One object: a mesh, an anisotropic scale (shape variation) and an RGBA tint (appearance variation)."""

    category: str
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgba: tuple[float, float, float, float] = (0.9, 0.6, 0.3, 1.0)


def rotation(axis: int, degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


class MeshRenderer:
    """One pybullet DIRECT connection; `load` an instance, then `render` it from view vectors."""

    def __init__(self, size: int) -> None:
        import pybullet as p

        self.p = p
        self.size = size
        self.client = p.connect(p.DIRECT)
        self.centre = np.zeros(3)
        self.radius = 1.0

    def load(self, instance: Instance) -> None:
        p = self.p
        p.resetSimulation(physicsClientId=self.client)
        path = mesh_path(instance.category)
        scale = np.asarray(instance.scale, dtype=np.float64)
        shape = p.createVisualShape(
            p.GEOM_MESH,
            fileName=path,
            meshScale=scale.tolist(),
            rgbaColor=list(instance.rgba),
            physicsClientId=self.client,
        )
        p.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, physicsClientId=self.client)
        lo, hi = mesh_bounds(path)
        lo, hi = lo * scale, hi * scale
        self.centre = (lo + hi) / 2
        self.radius = float(np.linalg.norm(hi - lo) / 2)

    def render(self, view: np.ndarray, up: np.ndarray | None = None, light: np.ndarray = LIGHT) -> np.ndarray:
        """(size, size, 3) uint8 image of the loaded instance seen from unit vector `view`."""
        p = self.p
        view = np.asarray(view, dtype=np.float64)
        up = camera_up(view) if up is None else up  # world y up, unless the camera looks along it
        eye = self.centre + DISTANCE * self.radius * view
        view_matrix = p.computeViewMatrix(
            eye.tolist(), self.centre.tolist(), np.asarray(up).tolist(), physicsClientId=self.client
        )
        proj = p.computeProjectionMatrixFOV(
            FOV_DEG, 1.0, 0.1 * self.radius, 6.0 * self.radius, physicsClientId=self.client
        )
        _, _, rgba, _, seg = p.getCameraImage(
            self.size,
            self.size,
            view_matrix,
            proj,
            renderer=p.ER_TINY_RENDERER,
            lightDirection=np.asarray(light).tolist(),
            shadow=0,
            physicsClientId=self.client,
        )
        image = np.asarray(rgba, dtype=np.uint8).reshape(self.size, self.size, 4)[..., :3].copy()
        image[np.asarray(seg).reshape(self.size, self.size) < 0] = 0
        return image

    def close(self) -> None:
        self.p.disconnect(self.client)


SYMMETRY_ANGLES = (60.0, 90.0, 120.0, 180.0)


def find_symmetry(
    renderer: MeshRenderer, instance: Instance, tol: float = 0.01, n_views: int = 6
) -> tuple[str, float, float] | None:
    """A rotation about a mesh axis that leaves every test view unchanged, as (axis, degrees, difference).

    Moving the camera, its up vector and the light by R shows the object rotated by R⁻¹; if all views
    look the same (mean absolute difference < tol on [0, 1]) the pose under R is not observable.
    Symmetric meshes have their symmetry axes along their own x, y, z (sphere, cube, torus, brick).
    """
    renderer.load(instance)
    views = fibonacci_sphere(n_views)
    ups = [camera_up(v) for v in views]
    base = [renderer.render(v, u).astype(np.float32) / 255 for v, u in zip(views, ups)]
    for axis, name in enumerate("xyz"):
        for degrees in SYMMETRY_ANGLES:
            r = rotation(axis, degrees)
            diff = np.mean(
                [np.abs(renderer.render(r @ v, r @ u, r @ LIGHT) / 255 - b).mean() for v, u, b in zip(views, ups, base)]
            )
            if diff < tol:
                return name, degrees, float(diff)
    return None
