"""Real data for dataset distillation, with the critical-sample selection applied in `setup()`.

The training set is loaded whole as tensors (N, C, H, W), normalised, in the source's own order: digits (the
platform's bundled 1257/270/270 split), CIFAR-10/100 in torchvision's layout and order, or an HF dataset
(whose train split must be in the order the scores were computed in: the score file's fingerprint says).
`setup()` applies `data.selection` per class (lightning_modules/critical_distill/selection.py) and keeps
the per-class pools of KEPT images; the distillation module samples its real batches from them.

The train loader serves step numbers, not images: every process runs every step (the module splits the
classes between processes), so it is an IterableDataset, which Lightning does not shard. Val/test loaders
are the real held-out images, sharded under DDP as usual.

`CriticalScoresDataModule` serves the utility-score runs (`method: critical_scores`): its predict loader
gives process r the run ids r, r + W, r + 2W, ... (-1 pads the last round so every process takes the same
number of steps and the per-round gathers line up).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from datamodules.digits import CLASS_NAMES as DIGIT_CLASSES
from datamodules.digits import digit_images
from lightning_modules.critical_distill.config import Criterion, DistillDataConfig, DistillSource
from lightning_modules.critical_distill.selection import (
    Selection,
    check_labels,
    dataset_fingerprint,
    load_scores,
    select,
    subset_hash,
)
from tenfold.errors import DataError
from tenfold.method import ExportMeta, MethodDataModule

# DatasetCondensation's normalisation constants.
NORMALISATION = {
    DistillSource.cifar10: ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
    DistillSource.cifar100: ([0.5071, 0.4866, 0.4409], [0.2673, 0.2564, 0.2762]),
}


class RealData:
    """Train and held-out splits as uint8-derived float tensors, plus what identifies them."""

    def __init__(
        self,
        train_x: np.ndarray,
        train_y: np.ndarray,
        val: tuple,
        test: tuple,
        class_names: list[str],
        mean: list[float] | None = None,
        std: list[float] | None = None,
    ) -> None:
        # x: (N, H, W, C) uint8 -> float (N, C, H, W), normalised with the train split's own stats if none given
        def to_tensor(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255.0

        train = to_tensor(train_x)
        if mean is None:
            mean = [round(float(v), 4) for v in train.mean(dim=(0, 2, 3))]
            std = [round(float(v), 4) for v in train.std(dim=(0, 2, 3))]
        self.mean, self.std = mean, std
        m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
        self.train_x, self.train_y = (train - m) / s, torch.as_tensor(train_y, dtype=torch.long)
        self.val_x, self.val_y = (to_tensor(val[0]) - m) / s, torch.as_tensor(val[1], dtype=torch.long)
        self.test_x, self.test_y = (to_tensor(test[0]) - m) / s, torch.as_tensor(test[1], dtype=torch.long)
        self.class_names = class_names
        self.fingerprint = dataset_fingerprint(self.train_y.numpy())


def _digits(split_seed: int) -> RealData:
    splits = digit_images(split_seed)

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
        pairs = splits[split]
        # The platform's digits are grey values stored as RGB: keep one channel.
        x = np.stack([np.asarray(im)[:, :, :1] for im, _ in pairs])
        return x, np.array([y for _, y in pairs])

    return RealData(*arrays("train"), arrays("val"), arrays("test"), list(DIGIT_CLASSES))


def _torchvision_cifar(source: DistillSource, root: str | None) -> RealData:
    from torchvision.datasets import CIFAR10, CIFAR100

    ten = source is DistillSource.cifar10
    cls, folder = (CIFAR10, "cifar-10-batches-py") if ten else (CIFAR100, "cifar-100-python")
    if not root or not (Path(root) / folder).is_dir():
        raise DataError(
            f"data.source={source.value} needs data.root: the folder holding torchvision's {folder}/ "
            f"(got {root!r}); or use data.source=hf with data.hf_name (a local copy or the HF cache)"
        )
    try:
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
    except RuntimeError as exc:
        raise DataError(f"data.root={root}: torchvision cannot read {folder}/ ({exc})") from None
    # CIFAR has no validation split: validation uses the test split, as the official code does.
    held = (test.data, np.array(test.targets))
    mean, std = NORMALISATION[source]
    return RealData(train.data, np.array(train.targets), held, held, list(train.classes), mean, std)


def _hf(cfg: DistillDataConfig) -> RealData:
    from datamodules.hf_images import HFImageDataset, load_hf_split, set_offline

    if not cfg.hf_name:
        raise DataError("data.source=hf needs data.hf_name (e.g. cifar10, or imagefolder/parquet with data.root)")
    set_offline(cfg.offline, cfg.cache_dir)

    def arrays(split: str, classes: list | None) -> tuple[np.ndarray, np.ndarray, list]:
        ds = HFImageDataset(
            load_hf_split(cfg.hf_name, cfg.root, split, cfg.cache_dir), cfg.image_column, cfg.label_column, classes
        )
        x = np.stack([np.asarray(ds[i][0]) for i in range(len(ds))])
        return x, np.array([ds[i][1] for i in range(len(ds))]), ds.classes

    tx, ty, classes = arrays(cfg.train_split, None)
    vx, vy, _ = arrays(cfg.test_split, classes)
    return RealData(tx, ty, (vx, vy), (vx, vy), [str(c) for c in classes])


@lru_cache(maxsize=4)
def _load_cached(source: DistillSource, root: str | None, split_seed: int) -> RealData:
    if source is DistillSource.digits:
        return _digits(split_seed)
    return _torchvision_cifar(source, root)


def load_real_data(cfg: DistillDataConfig) -> RealData:
    if cfg.source is DistillSource.hf:
        return _hf(cfg)
    return _load_cached(cfg.source, cfg.root, cfg.digits_split_seed)


class StepIndices(IterableDataset):
    """0..steps-1, identically in every process."""

    def __init__(self, steps: int, start: int = 0) -> None:
        self.steps, self.start = steps, start

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter(torch.arange(self.start, self.steps))


class RunIds(IterableDataset):
    """This process's share of `runs` score runs, round by round: round j is run j * world + rank (or -1)."""

    def __init__(self, runs: int, rank: int, world: int) -> None:
        self.runs, self.rank, self.world = runs, rank, world

    def __len__(self) -> int:
        return -(-self.runs // self.world)

    def __iter__(self):
        ids = [j * self.world + self.rank for j in range(len(self))]
        return iter(torch.tensor([r if r < self.runs else -1 for r in ids]))


class CriticalDistillDataModule(MethodDataModule):
    cfg: DistillDataConfig

    def __init__(self, cfg: DistillDataConfig) -> None:
        super().__init__(cfg)
        self.data: RealData | None = None
        self.selection: Selection | None = None

    # ---- what the runner asks

    def check(self) -> None:
        self._prepare()

    def module_kwargs(self) -> dict:
        self._prepare()
        return {
            "class_names": self.data.class_names,
            "image_shape": list(self.data.train_x.shape[1:]),
            "mean": self.data.mean,
            "std": self.data.std,
            "kept_per_class": self.selection.per_class_kept,
            "subset_hash": self.subset_hash,
        }

    def export_meta(self) -> ExportMeta:
        self._prepare()
        return ExportMeta(
            input_size=list(self.data.train_x.shape[1:]),
            mean=self.data.mean,
            std=self.data.std,
            class_names=self.data.class_names,
            extra={
                "dataset_fingerprint": self.data.fingerprint,
                "subset_hash": self.subset_hash,
                "criterion": self.selection.criterion,
                "kept_fraction": round(self.selection.kept_fraction, 6),
            },
        )

    # ---- selection

    @property
    def subset_hash(self) -> str:
        return subset_hash(self.data.fingerprint, self.selection.kept)

    @property
    def class_pools(self) -> list[torch.Tensor]:
        """Per class, the kept real training images (n_c kept, C, H, W)."""
        self._prepare()
        kept_y = self.data.train_y[self.selection.kept]
        kept_x = self.data.train_x[self.selection.kept]
        return [kept_x[kept_y == c] for c in range(len(self.data.class_names))]

    def _prepare(self) -> None:
        if self.selection is not None:
            return
        self.data = load_real_data(self.cfg)
        sel, labels = self.cfg.selection, self.data.train_y.numpy()
        scores = None
        if sel.criterion not in (Criterion.none, Criterion.random):
            if not sel.scores:
                raise DataError(
                    f"data.selection.criterion={sel.criterion.value} needs data.selection.scores: a score "
                    "file from method=critical_scores or method=critical_scores_import"
                )
            score_file = load_scores(sel.scores, labels)
            indicator = sel.criterion.value.rpartition("_")[0]
            if score_file.indicator != indicator:
                raise DataError(
                    f"data.selection.scores={sel.scores} holds {score_file.indicator} scores but "
                    f"criterion={sel.criterion.value} ranks by {indicator}"
                )
            scores = score_file.scores
        ratios = (sel.drop_ratio, sel.keep_ratio) if sel.criterion is not Criterion.none else (None, None)
        self.selection = select(
            labels,
            sel.criterion.value,
            scores,
            *ratios,
            keep_to=sel.keep_to,
            seed=sel.seed,
            class_names=self.data.class_names,
        )

    # ---- Lightning hooks

    def setup(self, stage: str) -> None:
        self._prepare()

    def train_dataloader(self) -> DataLoader:
        steps = self.trainer.lightning_module.distill_steps()
        return DataLoader(StepIndices(steps), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return self._held(self.data.val_x, self.data.val_y)

    def test_dataloader(self) -> DataLoader:
        return self._held(self.data.test_x, self.data.test_y)

    def _held(self, x: torch.Tensor, y: torch.Tensor) -> DataLoader:
        batch = self.cfg.eval_batch_size_per_device or self.cfg.batch_size_per_device
        return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False, num_workers=self.cfg.num_workers)


class CriticalScoresDataModule(MethodDataModule):
    """The whole training set (no selection: the scores rank all of it) and the run ids of this process."""

    cfg: DistillDataConfig

    def __init__(self, cfg: DistillDataConfig) -> None:
        super().__init__(cfg)
        self.data: RealData | None = None

    def _prepare(self) -> RealData:
        if self.data is None:
            self.data = load_real_data(self.cfg)
            check_labels(self.data.train_y.numpy())
        return self.data

    def check(self) -> None:
        self._prepare()

    def module_kwargs(self) -> dict:
        data = self._prepare()
        return {
            "class_names": data.class_names,
            "image_shape": list(data.train_x.shape[1:]),
            "fingerprint": data.fingerprint,
        }

    def export_meta(self) -> ExportMeta:
        data = self._prepare()
        return ExportMeta(
            input_size=list(data.train_x.shape[1:]),
            mean=data.mean,
            std=data.std,
            class_names=data.class_names,
            extra={"dataset_fingerprint": data.fingerprint},
        )

    def setup(self, stage: str) -> None:
        self._prepare()

    def predict_dataloader(self) -> DataLoader:
        runs = self.trainer.lightning_module.num_runs()
        return DataLoader(RunIds(runs, self.trainer.global_rank, self.trainer.world_size), batch_size=None)
