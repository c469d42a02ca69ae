"""The exported lens of a deeplens run: paraxial numbers and the RGB spot size per field, one JSON line each."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from omegaconf import OmegaConf

from lightning_modules.optics import Lens, rms_spot, spot_diagram
from tenfold.errors import CheckpointError, ConfigError


def predict(run_dir: Path, inputs: list[str], options: dict[str, str]) -> Iterator[dict]:
    if inputs:
        raise ConfigError("a deeplens run reports its exported lens: pass no inputs (fields with -o fields=0,0.7,1)")
    run_dir = Path(run_dir)
    prescription = run_dir / "export" / "prescription.json"
    if not prescription.is_file():
        raise CheckpointError(f"{prescription} not found: train with export.enabled=true (the default)")
    spec = OmegaConf.load(run_dir / "config.yaml").model.spec
    lens = Lens.from_json(prescription)
    fields = [float(f) for f in options["fields"].split(",")] if "fields" in options else list(spec.fields)
    yield {"prescription": str(prescription), "efl_mm": round(lens.foclen, 4), "fnum": round(lens.fnum, 3),
           "hfov_deg": spec.hfov_deg}
    hfov = math.radians(spec.hfov_deg)
    traced = spot_diagram(lens, torch.tensor([[0.0, f] for f in fields], dtype=lens.dtype), spec.depth_mm,
                          wavelengths=tuple(spec.wavelengths_nm), hfov=hfov)
    for i, field in enumerate(fields):
        per_wave = [float(rms_spot(xy[i], valid[i])) * 1000 for xy, valid in traced]  # mm -> um
        yield {"field": field, "rms_um_per_wavelength": [round(v, 3) for v in per_wave],
               "rms_um_rgb": round(math.sqrt(sum(v * v for v in per_wave) / len(per_wave)), 3)}
