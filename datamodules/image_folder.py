"""ImageFolder layout: `<root>/<split>/<class name>/<image>` (ImageNet's `train/` and `val/` trees)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torchvision.datasets import ImageFolder

from tenfold.errors import DataError

LAYOUT = "<root>/<split>/<class>/<image>.jpg (e.g. <root>/train/n01440764/x.JPEG)"


def load_image(path: str) -> Image.Image:
    """Decode one image as RGB, naming the file if it is unreadable."""
    try:
        with open(path, "rb") as fh:
            image = Image.open(fh)
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image file {path} ({exc}); remove or replace it") from None


def image_folder_split(root: str, split: str) -> ImageFolder:
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(
            f"data split folder not found: {split_dir}. Set data.root to a folder laid out as {LAYOUT}"
            f" (and data.{split}_split if the split folder has another name)"
        )
    try:
        return ImageFolder(str(split_dir), loader=load_image)
    except FileNotFoundError as exc:
        raise DataError(f"{split_dir} holds no images in class subfolders ({exc}); expected {LAYOUT}") from None
