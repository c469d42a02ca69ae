"""Predict with an exported run: `python predict.py runs/<method>/<run> image.png [more images]`.

Loads `export/model.pt` into the network named in `export/export_meta.yaml`, preprocesses each
image as the run's evaluation transform did, and prints one JSON line per image with the top-k
classes and probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from timm.data import create_transform

from datamodules.image_folder import load_image
from tenfold.errors import TenfoldError, one_line
from tenfold.export import load_export


def predict(run_dir: Path, images: list[Path], top_k: int = 5) -> list[dict]:
    model, meta = load_export(run_dir / "export")
    transform = create_transform(
        input_size=tuple(meta["input_size"]),
        is_training=False,
        interpolation=meta["interpolation"],
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        crop_pct=meta["crop_pct"],
    )
    names = meta["class_names"]
    batch = torch.stack([transform(load_image(str(path))) for path in images])  # (N, 3, H, W)
    with torch.inference_mode():
        probs = model(batch).softmax(dim=-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [
        {"image": str(path), "top": [{"class": names[i], "prob": round(float(p), 4)} for p, i in zip(ps, ids)]}
        for path, ps, ids in zip(images, top.values, top.indices)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="predict.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding export/")
    parser.add_argument("images", type=Path, nargs="+", help="image files")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        for row in predict(args.run_dir, args.images, args.top_k):
            print(json.dumps(row))
    except TenfoldError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
