"""Image classification data from one of three sources, with timm's train/eval transforms.

Sources (`data.source`): `digits` (bundled, default), `imagefolder` (`<root>/<split>/<class>/...`),
`hf` (HF `datasets`: hub name or local imagefolder/parquet). Lightning swaps in a DistributedSampler
under DDP, so each rank sees its own shard; the train loader drops the last partial batch so that
Mixup (which needs an even batch) and the global batch size stay constant.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from timm.data import create_transform
from torch.utils.data import Dataset
from torchvision import transforms as T

from datamodules.digits import CLASS_NAMES as DIGIT_CLASSES
from datamodules.digits import digit_images
from datamodules.hf_images import HFImageDataset, load_hf_split, set_offline
from datamodules.image_folder import align_to_classes, image_folder_split
from datamodules.split_loaders import ClassifiedSplitDataModule
from tenfold.errors import DataError
from tenfold.method import ExportMeta

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class DataSource(enum.Enum):
    digits = "digits"
    imagefolder = "imagefolder"
    hf = "hf"


class CropMode(enum.Enum):
    random_resized = "random_resized"  # ImageNet style (timm): RandomResizedCrop + RandAugment + erasing
    pad = "pad"  # CIFAR style: pad by `padding`, random crop back to size, horizontal flip


@dataclass
class AugmentConfig:
    """Training augmentation; `random_resized` goes through `timm.data.create_transform`."""

    crop: CropMode = CropMode.random_resized
    padding: int = 4  # pad mode only
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.5
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"  # RandAugment m9, 2 ops
    color_jitter: float | None = None
    re_prob: float = 0.25  # random erasing
    re_mode: str = "pixel"
    re_count: int = 1
    interpolation: str = "random"


@dataclass
class ImageClassificationDataConfig:
    source: DataSource = DataSource.digits
    root: str | None = None  # imagefolder: the folder holding the split folders; hf: data_dir
    hf_name: str | None = None  # hf: hub dataset name, or "imagefolder" / "parquet" with root
    image_column: str = "image"
    label_column: str = "label"
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = None  # None: test on the val split (ImageNet has no public test)
    digits_split_seed: int = 0
    image_size: int = 224
    crop_pct: float = 0.9  # eval: resize to image_size / crop_pct, then center-crop
    eval_interpolation: str = "bicubic"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    batch_size_per_device: int = 64
    eval_batch_size_per_device: int | None = None
    num_workers: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    offline: bool = True  # never reach the HF hub unless asked (sets HF_HUB_OFFLINE)
    cache_dir: str | None = None


class TransformedDataset(Dataset):
    """Applies an image transform lazily to (PIL image, label) pairs; picklable for workers."""

    def __init__(self, pairs: Any, transform: Callable) -> None:
        self.pairs = pairs
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.pairs[index]
        return self.transform(image), label


class ImageClassificationDataModule(ClassifiedSplitDataModule):
    def __init__(self, cfg: ImageClassificationDataConfig) -> None:
        super().__init__(cfg)
        self._splits: dict[str, Any] = {}
        if cfg.source is DataSource.hf:
            set_offline(cfg.offline, cfg.cache_dir)

    # ---- what the rest of the platform asks of a datamodule

    def check(self) -> None:
        """Fail within seconds if the configured data is absent, before any model is built."""
        for split in ("train", "val", "test"):
            self._raw_split(split)
        _ = self.class_names

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (3, self.cfg.image_size, self.cfg.image_size)

    def export_meta(self) -> ExportMeta:
        cfg = self.cfg
        return ExportMeta(input_size=list(self.input_size), mean=list(cfg.mean), std=list(cfg.std),
                          crop_pct=cfg.crop_pct, interpolation=cfg.eval_interpolation, class_names=self.class_names)

    def eval_transform(self) -> Callable:
        cfg = self.cfg
        return create_transform(
            input_size=self.input_size,
            is_training=False,
            interpolation=cfg.eval_interpolation,
            mean=tuple(cfg.mean),
            std=tuple(cfg.std),
            crop_pct=cfg.crop_pct,
        )

    def train_transform(self) -> Callable:
        cfg, aug = self.cfg, self.cfg.augment
        if aug.crop is CropMode.pad:
            return T.Compose([
                T.Resize(cfg.image_size),
                T.RandomCrop(cfg.image_size, padding=aug.padding),
                T.RandomHorizontalFlip(aug.hflip),
                T.ToTensor(),
                T.Normalize(cfg.mean, cfg.std),
            ])
        return create_transform(
            input_size=self.input_size,
            is_training=True,
            scale=tuple(aug.scale),
            ratio=tuple(aug.ratio),
            hflip=aug.hflip,
            color_jitter=aug.color_jitter or 0.0,
            auto_augment=aug.auto_augment,
            interpolation=aug.interpolation,
            mean=tuple(cfg.mean),
            std=tuple(cfg.std),
            re_prob=aug.re_prob,
            re_mode=aug.re_mode,
            re_count=aug.re_count,
        )

    # ---- Lightning hooks

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_set = TransformedDataset(self._raw_split("train"), self.train_transform())
        if stage in ("fit", "validate"):
            self.val_set = TransformedDataset(self._raw_split("val"), self.eval_transform())
        if stage == "test":
            self.test_set = TransformedDataset(self._raw_split("test"), self.eval_transform())

    # ---- internals

    def _split_name(self, split: str) -> str:
        cfg = self.cfg
        return {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split or cfg.val_split}[split]

    def _raw_split(self, split: str) -> Any:
        """(PIL image, label) pairs of one split, loaded once."""
        if split not in self._splits:
            self._splits[split] = self._load_split(split)
            if len(self._splits[split]) == 0:
                source = self.cfg.source.value
                raise DataError(f"the {split} split ({self._split_name(split)}) of data.source={source} is empty")
        return self._splits[split]

    def _load_split(self, split: str) -> Any:
        cfg = self.cfg
        if cfg.source is DataSource.digits:
            return digit_images(cfg.digits_split_seed)[split]
        if cfg.root is None and cfg.source is DataSource.imagefolder:
            raise DataError(
                "data.source=imagefolder needs data.root: set data.root=/path/to/dataset holding "
                f"'{cfg.train_split}/' and '{cfg.val_split}/' class folders"
            )
        # Val/test splits take the train split's class list, so labels agree even when a split lacks a class.
        train_classes = None if split == "train" else self._raw_split("train").classes
        if cfg.source is DataSource.imagefolder:
            folder = image_folder_split(cfg.root, self._split_name(split))
            return folder if train_classes is None else align_to_classes(folder, train_classes)
        if not cfg.hf_name:
            raise DataError("data.source=hf needs data.hf_name (a hub name, or imagefolder/parquet with data.root)")
        hf_split = load_hf_split(cfg.hf_name, cfg.root, self._split_name(split), cfg.cache_dir)
        return HFImageDataset(hf_split, cfg.image_column, cfg.label_column, train_classes)

    def _read_class_names(self) -> list[str]:
        if self.cfg.source is DataSource.digits:
            return list(DIGIT_CLASSES)
        return list(self._raw_split("train").classes)
