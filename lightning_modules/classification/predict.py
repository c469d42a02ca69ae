"""Top-k classes of image files with an exported classifier (rdnet, asr, loraprune_vit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from timm.data import create_transform

from datamodules.image_folder import load_image
from tenfold.errors import ConfigError
from tenfold.export import load_export


def predict(run_dir: Path, inputs: list[str], options: dict[str, str]) -> Iterator[dict]:
    if not inputs:
        raise ConfigError("pass one or more image files to classify")
    top_k = int(options.get("top_k", 5))
    model, meta = load_export(Path(run_dir) / "export")
    transform = create_transform(
        input_size=tuple(meta["input_size"]), is_training=False, interpolation=meta["interpolation"],
        mean=tuple(meta["mean"]), std=tuple(meta["std"]), crop_pct=meta["crop_pct"],
    )
    names = meta["class_names"]
    batch = torch.stack([transform(load_image(path)) for path in inputs])  # (N, 3, H, W)
    with torch.inference_mode():
        probs = model(batch).softmax(dim=-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    for path, ps, ids in zip(inputs, top.values, top.indices):
        yield {"image": path, "top": [{"class": names[i], "prob": round(float(p), 4)} for p, i in zip(ps, ids)]}
