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


def align_to_classes(folder: ImageFolder, classes: list[str]) -> ImageFolder:
    """Label a split's images by the train split's class list.

    ImageFolder numbers each split's own class folders, so a val/test split that lacks one class would shift
    every later label silently.
    """
    unknown = sorted(set(folder.classes) - set(classes))
    if unknown:
        raise DataError(
            f"{folder.root}: class folders {unknown} are not in the train split's {len(classes)} classes; "
            "every evaluation class needs training images (or remove those folders)"
        )
    index = {name: i for i, name in enumerate(classes)}
    folder.samples = [(path, index[folder.classes[target]]) for path, target in folder.samples]
    folder.imgs = folder.samples
    folder.targets = [target for _, target in folder.samples]
    folder.classes, folder.class_to_idx = list(classes), index
    return folder
