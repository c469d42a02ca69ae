"""Restore images taken through the designed lens with the exported network of a deeplens_edof run.

Each restored image is written to <run>/predictions/<name>-restored.png; one JSON line per image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datamodules.image_folder import load_image
from tenfold.checkpoint_io import atomic_write
from tenfold.errors import ConfigError
from tenfold.export import load_export


def predict(run_dir: Path, inputs: list[str], options: dict[str, str]) -> Iterator[dict]:
    if not inputs:
        raise ConfigError("pass one or more image files (taken through the exported lens) to restore")
    model, _ = load_export(Path(run_dir) / "export")
    out_dir = Path(run_dir) / "predictions"
    for path in inputs:
        image = torch.from_numpy(np.asarray(load_image(path), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        with torch.inference_mode():
            restored = model(image).clamp(0, 1)[0]  # (3, H, W)
        pixels = (restored.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        target = out_dir / f"{Path(path).stem}-restored.png"
        atomic_write(target, lambda tmp, px=pixels: Image.fromarray(px).save(tmp, format="PNG"))
        yield {"image": path, "restored": str(target)}
