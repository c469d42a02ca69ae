"""MVTec AD layout, one class: normal training images split by parity, the labelled test split with masks.

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png, test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png      (0 = normal, 255 = anomalous)

* Masks are paired with defect images by exact stem (`000.png` <-> `000_mask.png`), not by sorted order
  (anomalib's pairing); a defect image without its mask and a mask without its image are errors.
* Images: RGB in [0, 1], resized (bilinear, antialiased) to `image_size`; grey and RGBA files (MVTec's grid,
  screw and zipper are grey) are converted, with one warning. No normalisation: the simulated anomalies and
  the networks work in [0, 1] (ImageNet normalisation is anomalib's known DRAEM pitfall).
* Masks: nearest-neighbour resizing, so they stay binary; a mask with values other than 0/255 is
  thresholded at 128, with one warning.
* Training (the paper's split strategy): the sorted `train/good` list, even indices -> half A (the
  reconstructive network's), odd -> half B (the discriminative network's), served as paired loaders
  (`{"a": ..., "b": ...}`); an epoch is one shuffled pass over each half on every rank (under DDP each
  rank has its own order; the ranks' simulated anomalies differ anyway).
* Validation and test both read the test split (anomalib's `same_as_test`); checkpoints are kept by step,
  not by a test metric (see the method's config).
* `procedural.enabled`: the generated MVTec-layout set of `datamodules/anomaly_aug_synthetic.py`, written
  once into a cache folder (never into the repository).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from datamodules.anomaly_aug_synthetic import generate
from tenfold.errors import ConfigError, DataError
from tenfold.method import ExportMeta, MethodDataModule

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
STRIDE = 32  # the discriminative U-Net pools 5 times


@dataclass
class ProceduralSetConfig:
    enabled: bool = False
    size: int = 64  # side of the generated images
    n_train: int = 120
    n_test_good: int = 30
    n_per_defect: int = 10
    seed: int = 0
    cache_dir: str | None = None  # None: $XDG_CACHE_HOME/tenfold/anomaly_aug (~/.cache/...)


@dataclass
class MVTecDataConfig:
    root: str | None = None  # the MVTec AD folder holding <category>/train/good ...
    category: str = "bottle"
    image_size: int = 256
    batch_size_per_device: int = 8
    eval_batch_size_per_device: int | None = 16
    num_workers: int = 4
    anomaly_source_dir: str | None = None  # optional DTD-layout folder of external anomaly sources
    bundled_sources: bool = True  # scikit-image / scikit-learn textures and photos (+ Perlin colour noise)
    max_sources: int = 1024  # preloaded source images at most
    procedural: ProceduralSetConfig = field(default_factory=ProceduralSetConfig)


@dataclass
class TestItem:
    image: Path
    defect: str | None  # None for test/good
    mask: Path | None


@dataclass
class CategoryFiles:
    train: list[Path]
    test: list[TestItem]
    defects: list[str]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _header(path: Path) -> tuple[tuple[int, int], str]:
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return im.size, im.mode
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DataError(f"{path} cannot be read as an image ({type(exc).__name__}: {exc}); "
                        "remove or replace it") from None


def scan_category(root: str, category: str) -> CategoryFiles:
    """List and check one class's files (every error names the file and the fix)."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"data.root={root}: no such folder (point it at the MVTec AD folder that holds "
                        "<category>/train/good, e.g. /data/mvtec_anomaly_detection)")
    folder = base / category
    if not folder.is_dir():
        found = sorted(p.name for p in base.iterdir() if (p / "train" / "good").is_dir())
        raise DataError(f"data.category={category}: no folder {folder} (categories found under data.root: "
                        f"{', '.join(found) or 'none'})")
    good = folder / "train" / "good"
    train = _images(good) if good.is_dir() else []
    if not train:
        raise DataError(f"{good}: no training images (the MVTec layout needs <category>/train/good/*.png)")
    test_dir = folder / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: missing (the MVTec layout needs <category>/test/good and test/<defect>)")
    defects = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and p.name != "good" and _images(p))
    normals = _images(test_dir / "good") if (test_dir / "good").is_dir() else []
    if not normals:
        raise DataError(f"{test_dir}/good: no normal test images; AUROC is undefined without them")
    if not defects:
        raise DataError(f"{test_dir}: no defect folders with images; AUROC is undefined without anomalies")
    items = [TestItem(p, None, None) for p in normals]
    for defect in defects:
        mask_dir = folder / "ground_truth" / defect
        images = _images(test_dir / defect)
        masks = {p.name: p for p in _images(mask_dir)} if mask_dir.is_dir() else {}
        for image in images:
            mask = masks.pop(f"{image.stem}_mask.png", None)
            if mask is None:
                raise DataError(f"{image}: no mask {mask_dir / (image.stem + '_mask.png')} (every defect image "
                                "needs ground_truth/<defect>/<stem>_mask.png)")
            items.append(TestItem(image, defect, mask))
        if masks:
            orphan = sorted(masks.values())[0]
            image = test_dir / defect / orphan.name.replace("_mask", "")
            raise DataError(f"{orphan}: a mask without its image {image} "
                            f"({len(masks)} orphan mask(s) in {mask_dir}); remove it or add the image")
    _check_files(train, items)
    return CategoryFiles(train, items, defects)


def _check_files(train: list[Path], items: list[TestItem]) -> None:
    converted, non_binary = [], []
    for path in train + [t.image for t in items]:
        _, mode = _header(path)
        if mode != "RGB":
            converted.append(path)
    for item in items:
        if item.mask is None:
            continue
        image_size, _ = _header(item.image)
        mask_size, _ = _header(item.mask)
        if image_size != mask_size:
            raise DataError(f"{item.mask}: mask size {mask_size[0]}x{mask_size[1]} differs from its image "
                            f"{item.image} ({image_size[0]}x{image_size[1]})")
        with Image.open(item.mask) as im:
            values = np.unique(np.asarray(im.convert("L")))
        if not set(values.tolist()) <= {0, 255}:
            non_binary.append(item.mask)
    if converted:
        warnings.warn(f"{len(converted)} image(s) are not RGB (e.g. {converted[0]}, mode "
                      f"{_header(converted[0])[1]}): converted to RGB", stacklevel=3)
    if non_binary:
        warnings.warn(f"{len(non_binary)} mask(s) are not binary 0/255 (e.g. {non_binary[0]}): thresholded at 128",
                      stacklevel=3)


def load_rgb(path: Path, size: int) -> Tensor:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255


def load_mask(path: Path | None, size: int) -> Tensor:
    if path is None:
        return torch.zeros(size, size, dtype=torch.uint8)
    with Image.open(path) as im:
        im = im.convert("L").resize((size, size), Image.NEAREST)
        return torch.from_numpy((np.asarray(im) >= 128).astype(np.uint8))


class NormalImages(Dataset):
    def __init__(self, paths: list[Path], size: int, ids: list[int]) -> None:
        self.paths, self.size, self.ids = paths, size, ids

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return load_rgb(self.paths[i], self.size), self.ids[i]  # image, index in the sorted train list


class TestImages(Dataset):
    def __init__(self, items: list[TestItem], defects: list[str], size: int) -> None:
        self.items, self.defects, self.size = items, defects, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Tensor | int]:
        item = self.items[i]
        return {
            "image": load_rgb(item.image, self.size),
            "mask": load_mask(item.mask, self.size),
            "label": int(item.defect is not None),
            "defect": -1 if item.defect is None else self.defects.index(item.defect),
            "index": i,
        }


def parity_split(n: int) -> tuple[list[int], list[int]]:
    """Half A = even sorted indices, half B = odd ones (near-duplicate neighbours land in both halves)."""
    return list(range(0, n, 2)), list(range(1, n, 2))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tenfold" / "anomaly_aug"


class MVTecDataModule(MethodDataModule):
    cfg: MVTecDataConfig

    def __init__(self, cfg: MVTecDataConfig) -> None:
        super().__init__(cfg)
        self.files: CategoryFiles | None = None

    # ---- where the data is

    @property
    def root(self) -> str | None:
        p = self.cfg.procedural
        if not p.enabled:
            return self.cfg.root
        key = hashlib.sha1(f"{p.size}/{p.n_train}/{p.n_test_good}/{p.n_per_defect}/{p.seed}".encode()).hexdigest()[:8]
        return str(Path(p.cache_dir or default_cache_dir()) / f"procedural-{key}")

    def check(self) -> None:
        cfg = self.cfg
        if cfg.image_size % STRIDE or cfg.image_size <= 0:
            nearest = max(STRIDE, round(cfg.image_size / STRIDE) * STRIDE)
            raise ConfigError(f"data.image_size={cfg.image_size} is not a multiple of {STRIDE} (the discriminative "
                              f"network pools 5 times): use e.g. {nearest}")
        if cfg.procedural.enabled and cfg.root:
            raise ConfigError("set either data.root (an MVTec folder) or data.procedural.enabled=true, not both")
        if not self.root:
            raise DataError("data.root is not set: point it at the MVTec AD folder (the one holding "
                            "bottle/, cable/, ... each with train/good), or use configs/demo/anomaly_aug.yaml")
        if cfg.anomaly_source_dir:
            from lightning_modules.anomaly_aug.sources import source_files

            source_files(cfg.anomaly_source_dir)
        self.prepare_data()
        self.files = scan_category(self.root, cfg.category)

    def prepare_data(self) -> None:
        p = self.cfg.procedural
        if p.enabled:
            generate(self.root, p.size, p.n_train, p.n_test_good, p.n_per_defect, p.seed)

    def setup(self, stage: str | None = None) -> None:
        if self.files is None:
            self.check()
        files, size = self.files, self.cfg.image_size
        even, odd = parity_split(len(files.train))
        self.half_a = NormalImages([files.train[i] for i in even], size, even)
        self.half_b = NormalImages([files.train[i] for i in odd], size, odd)
        self.test_set = TestImages(files.test, files.defects, size)

    # ---- loaders

    def _loader(self, dataset: Dataset, batch: int, train: bool) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(dataset, batch_size=batch, shuffle=train, drop_last=train and len(dataset) >= batch,
                          num_workers=workers, persistent_workers=workers > 0)

    def train_dataloader(self) -> CombinedLoader:
        b = self.cfg.batch_size_per_device
        return CombinedLoader({"a": self._train_loader(self.half_a, b), "b": self._train_loader(self.half_b, b)},
                              mode="max_size_cycle")

    def _train_loader(self, dataset: NormalImages, batch: int) -> DataLoader:
        """One shuffled pass over the half per epoch and rank (DRAEM draws training images at random, it does
        not partition them). Under DDP each rank gets its own order from a one-replica DistributedSampler,
        which Lightning leaves in place, so a small half still gives every rank full batches."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size == 1:
            return self._loader(dataset, batch, train=True)
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True,
                                     seed=trainer.global_rank + 1000 * self.cfg.procedural.seed)
        workers = self.cfg.num_workers
        return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=len(dataset) >= batch,
                          num_workers=workers, persistent_workers=workers > 0)

    def _eval_loader(self) -> DataLoader:
        return self._loader(self.test_set, self.cfg.eval_batch_size_per_device or self.cfg.batch_size_per_device,
                            train=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()

    # ---- what the module and the export need

    def module_kwargs(self) -> dict:
        return {"defect_names": list(self.files.defects) if self.files else [], "category": self.cfg.category}

    def export_meta(self) -> ExportMeta:
        s = self.cfg.image_size
        return ExportMeta(input_size=[3, s, s], interpolation="bilinear",
                          extra={"category": self.cfg.category, "value_range": [0.0, 1.0],
                                 "outputs": "anomaly_map (B, H, W) in [0, 1], image score (B,)"})

    def export_sample(self, n: int) -> Tensor | None:
        if not hasattr(self, "test_set"):
            self.setup("test")
        return torch.stack([self.test_set[i]["image"] for i in range(min(n, len(self.test_set)))])
