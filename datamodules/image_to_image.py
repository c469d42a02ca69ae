"""An image-to-image task folder: G's input images and real labelled images of G's output domain.

    <root>/input/{train,test}/<class>/<image>.png         what the generators are queried with
    <root>/target/{train,val,test}/<class>/<image>.png    real output-domain images: C's labelled data

The two sides need not be paired (attribute editing and domain translation have no pixel targets); the class
folders of input/ are not used. Images are read as grey when the first target image is single-channel, else
as RGB, scaled to [-1, 1]; every image of a side must have one size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from datamodules.image_folder import align_to_classes, image_folder_split
from tenfold.errors import DataError

INPUT_SPLITS = ("train", "test")
TARGET_SPLITS = ("train", "val", "test")
LAYOUT = (
    "<root>/input/{train,test}/<class>/<image>.png (G's inputs) and <root>/target/{train,val,test}/<class>/"
    "<image>.png (real labelled images of G's output domain)"
)


@dataclass
class ImageToImageData:
    inputs: dict[str, Tensor]  # split -> (N, C, h, w) in [-1, 1]
    targets: dict[str, tuple[Tensor, Tensor]]  # split -> (images (N, C, H, W) in [-1, 1], labels (N,))
    class_names: list[str]


def check_layout(root: str | None) -> None:
    if not root or not Path(root).is_dir():
        raise DataError(
            f"data.source=i2i needs data.root (now {root}): set data.root=/path/to/the task folder laid out as "
            f"{LAYOUT}; `python -m lightning_modules.gan_fingerprint.i2i_task OUT` writes an example"
        )
    for side, splits in (("input", INPUT_SPLITS), ("target", TARGET_SPLITS)):
        for split in splits:
            folder = Path(root) / side / split
            if not folder.is_dir():
                raise DataError(f"data.root={root}: {folder} is missing; an image-to-image task folder holds {LAYOUT}")


def _mode(path: str) -> str:
    """'L' when this image is single-channel, else 'RGB': the mode every image of the task is read in."""
    with Image.open(path) as image:
        return "L" if image.mode in ("L", "I", "I;16", "1") else "RGB"


def _read(path: str, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode), dtype=np.float32)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image file {path} ({exc}); remove or replace it") from None


def _stack(paths: list[str], mode: str, folder: Path) -> Tensor:
    arrays = [_read(p, mode) for p in paths]
    for path, array in zip(paths, arrays):
        if array.shape[:2] != arrays[0].shape[:2]:
            raise DataError(
                f"{folder}: images of several sizes, e.g. {path} is {array.shape[:2]} but {paths[0]} is "
                f"{arrays[0].shape[:2]}; resize them to one size"
            )
    pixels = np.stack(arrays)
    if pixels.ndim == 3:
        pixels = pixels[..., None]
    return torch.from_numpy(pixels / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()


def read_task(root: str) -> ImageToImageData:
    check_layout(root)
    train = image_folder_split(str(Path(root) / "target"), "train")
    names, mode = train.classes, _mode(train.samples[0][0])
    targets = {}
    for split in TARGET_SPLITS:
        folder = train if split == "train" else align_to_classes(image_folder_split(str(Path(root) / "target"), split),
                                                                  names)
        paths = [p for p, _ in folder.samples]
        targets[split] = (_stack(paths, mode, Path(folder.root)), torch.tensor(folder.targets))
    inputs = {}
    for split in INPUT_SPLITS:
        folder = image_folder_split(str(Path(root) / "input"), split)
        inputs[split] = _stack([p for p, _ in folder.samples], mode, Path(folder.root))
    return ImageToImageData(inputs, targets, names)
