"""Sharp image patches with their position on the sensor, for image simulation through a lens (DeepLens EDoF).

Every source image is the whole scene seen by the sensor: it is resized (shorter side) and centre-cropped to
a square of `image_size` pixels, one pixel per sensor pixel. A sample is a `patch_size` crop of it, the
crop centre's normalised field position (x right, y up, both in [-1, 1]; a lens renders the crop with its
PSF at that field) and the sample's index (evaluation seeds its sensor noise with it, so the noise does
not depend on batching or on the number of DDP ranks). Training crops are random; evaluation crops are
fixed (seeded by index), so every run and every DDP rank scores the same pixels.

Sources (`data.source`):
- `sample_photos` (default, bundled): scikit-image's sample photos (`skimage.data`), named per split.
- `folder`: a DIV2K-style layout, `<root>/<train_dir>/*.png` and `<root>/<val_dir>/*.png` of HR images.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.image_folder import load_image
from datamodules.split_loaders import SplitDataModule
from tenfold.errors import DataError
from tenfold.method import ExportMeta

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class PatchSource(enum.Enum):
    sample_photos = "sample_photos"
    folder = "folder"


@dataclass
class ImagePatchesDataConfig:
    source: PatchSource = PatchSource.sample_photos
    root: str | None = None  # folder: holds `train_dir` and `val_dir` (e.g. the DIV2K download)
    train_dir: str = "DIV2K_train_HR"
    val_dir: str = "DIV2K_valid_HR"
    test_dir: str | None = None  # None: test on the val images (DIV2K's test HR images are not public)
    # sample_photos: skimage.data names per split (photos only; grey ones are repeated to RGB)
    train_photos: list[str] = field(default_factory=lambda: [
        "astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "camera",
        "moon", "brick", "grass", "gravel", "clock", "retina",
    ])
    val_photos: list[str] = field(default_factory=lambda: ["chelsea", "coins"])
    test_photos: list[str] = field(default_factory=lambda: ["chelsea", "coins"])
    image_size: int = 1024  # the scene's side in sensor pixels
    patch_size: int = 256
    patches_per_image: int = 1  # random crops per image and training epoch
    eval_patches_per_image: int = 4  # fixed crops per image for validation/test
    batch_size_per_device: int = 8
    eval_batch_size_per_device: int | None = None
    num_workers: int = 4


def load_sample_photo(name: str) -> Image.Image:
    """A scikit-image sample photo as an RGB PIL image (bundled in the wheel: no download)."""
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise DataError(f"data.*_photos: '{name}' is not a scikit-image sample image (see skimage.data.__all__)")
    pixels = np.asarray(loader())
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return Image.fromarray(pixels[..., :3].astype(np.uint8))


def to_scene(image: Image.Image, size: int) -> Tensor:
    """Resize the shorter side to `size`, centre-crop a square: (3, size, size) float in [0, 1]."""
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def patch_field(top: int, left: int, patch_size: int, image_size: int) -> Tensor:
    """Normalised field position of a crop centre: x to the right, y up (image rows grow downwards)."""
    centre_x = (left + patch_size / 2) / image_size * 2 - 1
    centre_y = 1 - (top + patch_size / 2) / image_size * 2
    return torch.tensor([centre_x, centre_y], dtype=torch.float32)


class ImagePatches(Dataset):
    """(patch (3, P, P) in [0, 1], field (2,), index): random crops (train) or index-seeded fixed crops (eval)."""

    def __init__(self, images: list, image_size: int, patch_size: int, per_image: int, train: bool) -> None:
        self.images = images  # PIL images (sample photos) or file paths (folder)
        self.image_size, self.patch_size = image_size, patch_size
        self.per_image, self.train = per_image, train

    def __len__(self) -> int:
        return len(self.images) * self.per_image

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        source = self.images[index // self.per_image]
        image = load_image(str(source)) if isinstance(source, (str, Path)) else source
        scene = to_scene(image, self.image_size)
        span = self.image_size - self.patch_size + 1
        if self.train:  # torch's RNG: seeded per worker by Lightning, restored on resume
            top, left = (int(v) for v in torch.randint(0, span, (2,)))
        else:
            top, left = (int(v) for v in np.random.default_rng(index).integers(0, span, size=2))
        patch = scene[:, top : top + self.patch_size, left : left + self.patch_size]
        return patch, patch_field(top, left, self.patch_size, self.image_size), index


class ImagePatchesDataModule(SplitDataModule):
    def __init__(self, cfg: ImagePatchesDataConfig) -> None:
        if cfg.patch_size > cfg.image_size:
            raise DataError(f"data.patch_size={cfg.patch_size} exceeds data.image_size={cfg.image_size}")
        super().__init__(cfg)
        self._images: dict[str, list] = {}

    # ---- what the platform asks of a datamodule

    def check(self) -> None:
        """Fail within seconds if the configured images are absent, before any model is built."""
        for split in ("train", "val", "test"):
            self._split_images(split)

    def export_meta(self) -> ExportMeta:
        size = self.cfg.patch_size
        # Images are plain [0, 1] RGB: no normalisation to undo at inference.
        return ExportMeta(input_size=[3, size, size], extra={"image_size": self.cfg.image_size})

    # ---- Lightning hooks

    def setup(self, stage: str) -> None:
        cfg = self.cfg
        if stage == "fit":
            self.train_set = ImagePatches(self._split_images("train"), cfg.image_size, cfg.patch_size,
                                          cfg.patches_per_image, train=True)
        if stage in ("fit", "validate"):
            self.val_set = self._eval_set("val")
        if stage == "test":
            self.test_set = self._eval_set("test")

    # ---- internals

    def _eval_set(self, split: str) -> ImagePatches:
        cfg = self.cfg
        return ImagePatches(self._split_images(split), cfg.image_size, cfg.patch_size, cfg.eval_patches_per_image,
                            train=False)

    def _split_images(self, split: str) -> list:
        if split not in self._images:
            self._images[split] = self._list_images(split)
        return self._images[split]

    def _list_images(self, split: str) -> list:
        cfg = self.cfg
        if cfg.source is PatchSource.sample_photos:
            names = {"train": cfg.train_photos, "val": cfg.val_photos, "test": cfg.test_photos}[split]
            if not names:
                raise DataError(f"data.{split}_photos is empty: name at least one skimage.data photo")
            # Small bundled photos: decoded once; each crop resizes from the decoded image.
            return [load_sample_photo(name) for name in names]
        if cfg.root is None:
            raise DataError(
                "data.source=folder needs data.root: set data.root=/path/to/DIV2K holding "
                f"'{cfg.train_dir}/' and '{cfg.val_dir}/' with the high-resolution images"
            )
        folder_name = {"train": cfg.train_dir, "val": cfg.val_dir, "test": cfg.test_dir or cfg.val_dir}[split]
        folder = Path(cfg.root) / folder_name
        if not folder.is_dir():
            raise DataError(
                f"image folder not found: {folder}. Set data.root to the folder holding '{folder_name}/' "
                f"(or data.{split}_dir to its name)"
            )
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise DataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return paths
