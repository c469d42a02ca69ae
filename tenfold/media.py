"""Pictures for the dashboards: one helper every method logs images through (W&B and TensorBoard).

Images may be float tensors/arrays in [0, 1] or uint8, CHW or HWC, grey or RGB. They are converted to
uint8 once (wandb >= 0.31 no longer rescales floats, so a float image in [0, 1] would show black), tiny
ones are upsampled with nearest neighbours so an 8x8 digit stays readable, and a batch becomes one
captioned grid per call rather than N separate thumbnails.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

MIN_SIDE = 96  # upsample tiles smaller than this (integer factor, nearest)


def to_uint8_chw(image: Any) -> torch.Tensor:
    """One image as a (3, H, W) uint8 tensor."""
    t = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).detach().cpu()
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected an image of 2 or 3 dims, got shape {tuple(t.shape)}")
    if t.shape[0] not in (1, 3, 4) and t.shape[-1] in (1, 3, 4):
        t = t.permute(2, 0, 1)  # HWC -> CHW
    t = t[:3]
    if t.dtype != torch.uint8:
        t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return t.expand(3, -1, -1) if t.shape[0] == 1 else t


def image_grid(images: Sequence[Any], captions: Sequence[str] | None = None, nrow: int = 8) -> Image.Image:
    """A PIL grid of `images` (any mix of the accepted layouts, same size), each captioned underneath."""
    tiles = [to_uint8_chw(im) for im in images]
    factor = max(1, -(-MIN_SIDE // min(tiles[0].shape[1:])))
    if factor > 1:
        tiles = [t.repeat_interleave(factor, 1).repeat_interleave(factor, 2) for t in tiles]
    if captions is not None:
        tiles = [_captioned(t, text) for t, text in zip(tiles, captions)]
    grid = make_grid(torch.stack(tiles), nrow=min(nrow, len(tiles)), padding=2, pad_value=255)
    return Image.fromarray(grid.permute(1, 2, 0).numpy())


def _captioned(tile: torch.Tensor, text: str) -> torch.Tensor:
    picture = Image.fromarray(tile.permute(1, 2, 0).numpy())
    canvas = Image.new("RGB", (picture.width, picture.height + 14), "white")
    canvas.paste(picture, (0, 0))
    ImageDraw.Draw(canvas).text((2, picture.height + 1), text, fill="black")
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_image(fig: Any) -> Image.Image:
    """A matplotlib figure as an RGB PIL image (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def log_image(loggers: Sequence[Any], key: str, image: Any, step: int, caption: str | None = None) -> None:
    """One picture (a PIL image, or anything `to_uint8_chw` takes) to every W&B / TensorBoard logger."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    if not isinstance(image, Image.Image):
        image = Image.fromarray(to_uint8_chw(image).permute(1, 2, 0).numpy())
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            extra = {"caption": [caption]} if caption else {}
            logger.log_image(key=key, images=[image], step=step, **extra)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, np.asarray(image), step, dataformats="HWC")


def log_image_grid(loggers: Sequence[Any], key: str, images: Sequence[Any], step: int,
                   captions: Sequence[str] | None = None, nrow: int = 8) -> None:
    """`images` as one captioned grid under `key`."""
    if len(images):
        log_image(loggers, key, image_grid(images, captions, nrow), step)


def has_media_logger(loggers: Sequence[Any]) -> bool:
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    return any(isinstance(lg, (WandbLogger, TensorBoardLogger)) for lg in loggers)
