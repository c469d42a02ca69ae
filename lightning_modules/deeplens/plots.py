"""Pictures of a lens (matplotlib, no Lightning): the 2D layout with traced rays and spot diagrams."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lightning_modules.optics import Lens, spot_diagram
from lightning_modules.optics.materials import WAVE_D
from tenfold.media import figure_image, pyplot

FIELD_COLOURS = ("tab:blue", "tab:green", "tab:red", "tab:purple", "tab:orange")
WAVE_COLOURS = ("red", "green", "blue")


@torch.no_grad()
def layout_image(lens: Lens, fields: list[float], hfov: float, depth_mm: float, title: str = "",
                 rays_per_field: int = 7) -> Image.Image:
    """Meridional (y-z) section: surfaces, stop, sensor and a fan of rays for each field."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for surface in lens.surfaces:
        y = torch.linspace(-surface.r, surface.r, 101, dtype=lens.dtype)
        z = surface.d + surface.sag(y**2)
        if surface.is_stop:
            for sign in (-1, 1):
                ax.plot([float(surface.d)] * 2, [sign * surface.r, sign * surface.r * 1.3], "k-", lw=2)
        else:
            ax.plot(z.numpy(), y.numpy(), "k-", lw=1)
    ax.axvline(float(lens.d_sensor), color="gray", lw=2)
    pupil = torch.stack([torch.zeros(rays_per_field), torch.linspace(-1, 1, rays_per_field)], dim=-1)
    for i, field in enumerate(fields):
        points = lens.object_points(torch.tensor([[0.0, field]]), depth_mm, hfov)
        rays = lens.rays_from_points(points, WAVE_D, pupil, pupil_scale=0.98)
        path = [rays.o[0]]
        for k in range(len(lens.surfaces)):
            path.append(lens.trace(rays, upto=k + 1).o[0])
        end = lens.trace_to_sensor(rays)
        path.append(end.o[0])
        path = torch.stack(path)  # (surfaces + 2, rays, 3)
        for j in range(rays_per_field):
            if bool(end.valid[0, j]):
                ax.plot(path[1:, j, 2].numpy(), path[1:, j, 1].numpy(), color=FIELD_COLOURS[i % 5], lw=0.6)
    ax.set_aspect("equal")
    ax.set_xlabel("z (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_title(title or lens.name)
    return figure_image(fig)


@torch.no_grad()
def spot_diagrams_image(lens: Lens, fields: list[float], hfov: float, depth_mm: float,
                        wavelengths: list[float], n_rays: int = 512, title: str = "") -> Image.Image:
    """One panel per field: ray hits about the middle wavelength's centroid (um), with the RMS radius."""
    plt = pyplot()
    spots = spot_diagram(lens, torch.tensor([[0.0, f] for f in fields]), depth_mm, n_rays, tuple(wavelengths), hfov)
    colours = WAVE_COLOURS if len(wavelengths) == 3 else ["black"] * len(wavelengths)
    fig, axes = plt.subplots(1, len(fields), figsize=(2.6 * len(fields), 2.8), squeeze=False)
    for i, (ax, field) in enumerate(zip(axes[0], fields)):
        radius = 0.0
        for (xy, valid), colour in zip(spots, colours):
            hits = xy[i][valid[i]].numpy() * 1000
            if len(hits):
                ax.scatter(hits[:, 0], hits[:, 1], s=0.5, color=colour)
                radius = max(radius, float(np.sqrt((hits**2).sum(1).mean())))
        ax.set_title(f"field {field:.2f}: rms {radius:.2f} um", fontsize=8)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return figure_image(fig)
