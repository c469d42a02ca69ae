"""Differentiable sequential ray tracing in pure torch (no Lightning): the optics of DeepLens."""

from lightning_modules.optics.lens import DEPTH_INFINITY_MM, Lens, lens_from_prescription
from lightning_modules.optics.materials import material_from_name
from lightning_modules.optics.rays import Rays, refract
from lightning_modules.optics.spot import (
    WAVE_RGB,
    ideal_image_points,
    psf_binned,
    psf_rgb,
    psf_rgb_batch,
    pupil_samples,
    rms_spot,
    spot_diagram,
    trace_fields,
    trace_fields_multi,
)
from lightning_modules.optics.surfaces import ApertureStop, EvenAsphere

__all__ = [
    "DEPTH_INFINITY_MM", "WAVE_RGB", "ApertureStop", "EvenAsphere", "Lens", "Rays", "ideal_image_points",
    "lens_from_prescription", "material_from_name", "psf_binned", "psf_rgb", "psf_rgb_batch",
    "pupil_samples", "refract",
    "rms_spot", "spot_diagram", "trace_fields", "trace_fields_multi",
]
