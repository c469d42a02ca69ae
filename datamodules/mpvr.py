"""MPVR's data: zero-shot test images with their class names, and (demo only) captioned training pairs.

Sources (`data.source`):
  * `world`: the procedural captioned world (lightning_modules/mpvr/world.py): captioned pairs for the
    fit stage, and the zero-shot test split of concepts whose names no caption contains;
  * `coop`: CoOp's layout, `<root>/split_zhou_<dataset>.json` ({"test": [[path, label, classname], ...]})
    with images under `<root>/<image_dir>`;
  * `imagefolder`: an HF `imagefolder` directory (`<root>/<split>/<class>/<image>`).
Class names always come from the data (the split file / folder names), never from a prompt bank.
Under DDP the test split is sharded without padding (Lightning's DistributedSampler would repeat
samples to even the shards, and the metrics would count them twice).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, image_transform
from torch.utils.data import DataLoader, Dataset

from datamodules.image_folder import load_image
from datamodules.split_loaders import ClassifiedSplitDataModule
from lightning_modules.mpvr import world
from lightning_modules.mpvr.config import DataSource, MPVRDataConfig
from tenfold.errors import DataError
from tenfold.method import ExportMeta


class WorldPairs(Dataset):
    """(image, caption) pairs of the procedural world, generated from (seed, split, index); the module
    tokenises captions for its own text context length."""

    def __init__(self, seed: int, split: str, size: int) -> None:
        self.seed, self.split, self.size = seed, split, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        image, caption = world.captioned_pair(self.seed, self.split, index)
        return world.to_tensor(image, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD), caption


class WorldTest(Dataset):
    def __init__(self, seed: int, size: int) -> None:
        self.seed, self.size = seed, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = world.labelled_image(self.seed, index)
        return world.to_tensor(image, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD), label


class FileImages(Dataset):
    """(transformed image, label) from a list of (path, label); an unreadable file is a one-line DataError."""

    def __init__(self, items: list[tuple[str, int]], transform: Any) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return self.transform(load_image(path)), label


class HFImages(Dataset):
    def __init__(self, rows: Any, transform: Any) -> None:
        self.rows, self.transform = rows, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.rows[index]
        return self.transform(image), label


class MPVRDataModule(ClassifiedSplitDataModule):
    def __init__(self, cfg: MPVRDataConfig) -> None:
        super().__init__(cfg)
        self._items: list[tuple[str, int]] | None = None

    # ---- what the module needs

    def check(self) -> None:
        _ = self.class_names

    def export_meta(self) -> ExportMeta:
        size = world.IMAGE_SIZE if self.cfg.source is DataSource.world else self.cfg.image_size
        return ExportMeta(input_size=[3, size, size], mean=list(OPENAI_DATASET_MEAN), std=list(OPENAI_DATASET_STD),
                          interpolation="bicubic", class_names=self.class_names)

    def export_sample(self, n: int) -> Any:
        self.setup("test")
        return next(iter(DataLoader(self.test_set, batch_size=n)))[0]

    # ---- splits

    def setup(self, stage: str | None = None) -> None:
        cfg = self.cfg
        if cfg.source is DataSource.world:
            self.train_set = WorldPairs(cfg.world_seed, "train", cfg.train_size)
            self.val_set = WorldPairs(cfg.world_seed, "val", cfg.val_size)
            self.test_set = WorldTest(cfg.world_seed, cfg.test_size)
            return
        transform = image_transform(cfg.image_size, is_train=False)  # bicubic resize, centre crop, CLIP mean/std
        if cfg.source is DataSource.coop:
            self.test_set = FileImages(self._coop_items(), transform)
        else:
            self.test_set = HFImages(self._hf_rows(), transform)
        # Zero-shot evaluation has no training pairs: the fit stage must be off (the paper config's default).
        self.train_set = self.val_set = _NoPairs(cfg.source)

    def test_dataloader(self) -> DataLoader:
        sampler = None
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            sampler = UnrepeatedDistributedSampler(self.test_set, shuffle=False)
        return DataLoader(self.test_set, batch_size=self._eval_batch(), sampler=sampler, shuffle=False,
                          num_workers=self.cfg.num_workers)

    # ---- sources

    def _read_class_names(self) -> list[str]:
        cfg = self.cfg
        if cfg.source is DataSource.world:
            return list(world.CLASS_NAMES)
        if not cfg.root:
            layout = (f"split_zhou_{cfg.dataset}.json and {cfg.image_dir}/" if cfg.source is DataSource.coop
                      else "<split>/<class>/<image> folders")
            raise DataError(f"data.root is not set: point it at the {cfg.dataset} folder holding {layout}")
        if cfg.source is DataSource.coop:
            entries = self._coop_entries()
            names: dict[int, str] = {}
            for _, label, name in entries:
                names.setdefault(int(label), str(name))
            if sorted(names) != list(range(len(names))):
                raise DataError(f"{self._split_file()}: labels are not 0..{len(names) - 1}")
            return [names[i] for i in range(len(names))]
        return list(self._hf_split().features["label"].names)

    def _split_file(self) -> Path:
        return Path(self.cfg.root) / f"split_zhou_{self.cfg.dataset}.json"

    def _coop_entries(self) -> list:
        path = self._split_file()
        if not path.is_file():
            raise DataError(f"data.root={self.cfg.root}: no {path.name} (CoOp split file); set data.root to the "
                            f"CoOp {self.cfg.dataset} folder, or data.dataset to the name in its split file")
        try:
            split = json.loads(path.read_text())[self.cfg.split]
        except (json.JSONDecodeError, KeyError) as exc:
            raise DataError(f"{path}: not a CoOp split file with a '{self.cfg.split}' list ({exc})") from None
        if not split:
            raise DataError(f"{path}: the '{self.cfg.split}' split is empty")
        return split

    def _coop_items(self) -> list[tuple[str, int]]:
        base = Path(self.cfg.root) / self.cfg.image_dir
        return [(str(base / p), int(label)) for p, label, _ in self._coop_entries()]

    def _hf_split(self) -> Any:
        from datamodules.hf_images import load_hf_split, set_offline

        set_offline(True, None)
        return load_hf_split("imagefolder", self.cfg.root, self.cfg.split, None)

    def _hf_rows(self) -> Any:
        from datamodules.hf_images import HFImageDataset

        return HFImageDataset(self._hf_split(), "image", "label")


class _NoPairs(Dataset):
    def __init__(self, source: DataSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Any:
        raise DataError(f"data.source={self.source.value} has test images only, no captioned training pairs: keep "
                        "trainer.limit_train_batches=0 and trainer.limit_val_batches=0 (zero-shot evaluation)")
