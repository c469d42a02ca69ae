"""The pose benchmark on disk, and the DataModule that serves it (paper §2.1, §2.5).

Layout (the generator writes it; the authors' ShapeNet renders fit it once a splits.json is added):

    <root>/splits.json      {"train": ["<category>/<instance>", ...], "val": [...], "test": [...],
                             "ood_bank": [...], "ood_test": [...]}     (ood_*: held-out categories, optional)
    <root>/meta.json        optional: {"poses": [[x, y, z], ...], "ood_poses": [...]} (the pose tables)
    <root>/views/<category>/<instance>/<pose>_<tag>_<k>.png     k = 0 left, 1 centre, 2 right
    <root>/ood_poses/<category>/<instance>/<pose>.png           optional: test instances at unseen poses
(`views/` may be omitted: category folders directly under the root.) Train instances need all three
members of every triplet; evaluation instances need only the centres `<pose>_<tag>_1.png`, whose pose
label is `<pose>`. Without a pose table the pose indices found are remapped to 0..P-1.

Training batches carry **no labels**: (T1(x_C), T2(x_C), x_L, x_C, x_R), two augmentations of the centre
for the semantic loss and the unaugmented triplet. Labelled views (category, pose, instance, view vector)
only appear in the evaluation loaders: the kNN bank (train instances), val, test, out-of-domain poses and
categories.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from datamodules.ssl_trajectory_generate import GeneratorConfig, check_generator, generate
from lightning_modules.ssl_trajectory.poses import nearest_pose
from tenfold.errors import DataError
from tenfold.method import ExportMeta, MethodDataModule

CIFAR_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR_STD = [0.2470, 0.2435, 0.2616]
VIEW_FILE = re.compile(r"^(\d+)_([^_]+)_([012])\.png$")
SPLITS = ("train", "val", "test", "ood_bank", "ood_test")


class PoseDataSource(enum.Enum):
    generate = "generate"  # render the pybullet benchmark (cached)
    folder = "folder"  # a benchmark already on disk at data.root (e.g. the authors' ShapeNet renders)


@dataclass
class SemanticAugmentConfig:
    """The semantic views' augmentation (paper §2.4, VICReg): the triplet views get none."""

    min_scale: float = 0.2
    hflip: float = 0.5
    color_jitter: list[float] = field(default_factory=lambda: [0.4, 0.4, 0.2, 0.1])
    color_jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    solarize_prob: float = 0.1


@dataclass
class PoseDataConfig:
    source: PoseDataSource = PoseDataSource.generate
    root: str | None = None  # folder: the benchmark root; generate: the cache root (None: XDG cache)
    stored_size: int | None = None  # side of the files on disk (None: generate.render_size / any square)
    image_size: int = 32  # what the network sees (resized on load)
    mean: list[float] = field(default_factory=lambda: list(CIFAR_MEAN))
    std: list[float] = field(default_factory=lambda: list(CIFAR_STD))
    batch_size_per_device: int = 256
    eval_batch_size_per_device: int | None = None
    num_workers: int = 4
    augment: SemanticAugmentConfig = field(default_factory=SemanticAugmentConfig)
    generate: GeneratorConfig = field(default_factory=GeneratorConfig)


# --------------------------------------------------------------------------------------------------
# Reading the layout


@dataclass
class View:
    path: str
    category: int  # index into the split's category list (in-domain or held-out)
    pose: int
    instance: int  # index into the split's instance list: unique within a split
    direction: tuple[float, float, float] | None = None  # the unit view vector, when meta.json has the pose table


@dataclass
class BenchmarkIndex:
    root: Path
    categories: list[str]
    ood_categories: list[str]
    n_poses: int
    triplets: list[tuple[str, str, str]]
    views: dict[str, list[View]]  # bank, val, test, ood_pose, ood_bank, ood_test


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); it should hold {what}"
        ) from None


def read_splits(root: Path) -> dict[str, list[str]]:
    path = root / "splits.json"
    if not path.is_file():
        raise DataError(
            f"{path} not found: the benchmark root needs splits.json listing '<category>/<instance>' "
            "per split (train, val, test; optional ood_bank, ood_test)"
        )
    splits = _read_json(path, '{"train": [...], "val": [...], "test": [...]}')
    if not isinstance(splits, dict):
        raise DataError(f"{path}: the top level must be an object with keys train, val, test")
    for split in ("train", "val", "test"):
        if not splits.get(split):
            raise DataError(f"{path}: split '{split}' is missing or empty (a list of '<category>/<instance>')")
    for split, names in splits.items():
        if split not in SPLITS:
            raise DataError(f"{path}: unknown split '{split}' (allowed: {', '.join(SPLITS)})")
        if not isinstance(names, list) or not all(isinstance(n, str) and n.count("/") == 1 for n in names):
            raise DataError(f"{path}: split '{split}' must be a list of '<category>/<instance>' strings")
    return splits


def _view_files(folder: Path) -> dict[tuple[int, str], dict[int, Path]]:
    """(pose, tag) -> {member k: path} for the view files of one instance."""
    if not folder.is_dir():
        raise DataError(f"instance folder {folder} not found (listed in splits.json)")
    groups: dict[tuple[int, str], dict[int, Path]] = {}
    for path in folder.iterdir():
        match = VIEW_FILE.match(path.name)
        if match:
            pose, tag, k = int(match[1]), match[2], int(match[3])
            groups.setdefault((pose, tag), {})[k] = path
    if not groups:
        raise DataError(f"{folder} holds no views named <pose>_<tag>_<k>.png (k = 0 left, 1 centre, 2 right)")
    return groups


def check_image(path: Path | str, stored_size: int | None) -> Image.Image:
    """Open one view; DataError on grayscale/RGBA or on a size other than data.stored_size."""
    with Image.open(path) as image:
        if image.mode != "RGB":
            kind = {"L": "grayscale", "LA": "grayscale", "RGBA": "RGBA", "P": "palette"}.get(image.mode, image.mode)
            raise DataError(
                f"{path} is {kind} (mode {image.mode}); the benchmark needs RGB renders: convert them "
                "(e.g. PIL image.convert('RGB') on a black background)"
            )
        if stored_size is not None and image.size != (stored_size, stored_size):
            raise DataError(
                f"{path} is {image.size[0]}x{image.size[1]} but data.stored_size={stored_size}: set "
                f"data.stored_size to the render size or re-render the benchmark"
            )
        if image.size[0] != image.size[1]:
            raise DataError(f"{path} is {image.size[0]}x{image.size[1]}: views must be square")
        image.load()
        return image


def read_benchmark(root: Path, stored_size: int | None) -> BenchmarkIndex:
    if not root.is_dir():
        raise DataError(
            f"data.root={root} does not exist: point it at a pose benchmark holding splits.json and "
            "views/<category>/<instance>/<pose>_<tag>_<k>.png"
        )
    splits = read_splits(root)
    meta = _read_json(root / "meta.json", "the pose tables") if (root / "meta.json").is_file() else {}
    poses = np.asarray(meta["poses"]) if meta.get("poses") else None
    ood_poses = np.asarray(meta["ood_poses"]) if meta.get("ood_poses") else None
    views_root = root / "views" if (root / "views").is_dir() else root
    categories = sorted({name.split("/")[0] for split in ("train", "val", "test") for name in splits[split]})
    ood_categories = sorted(
        {name.split("/")[0] for split in ("ood_bank", "ood_test") for name in splits.get(split, [])}
    )
    if set(categories) & set(ood_categories):
        raise DataError(
            f"{root}/splits.json: categories {sorted(set(categories) & set(ood_categories))} appear in "
            "both the in-domain splits and ood_bank/ood_test"
        )

    triplets: list[tuple[str, str, str]] = []
    raw: dict[str, list[tuple[str, str, int, int]]] = {k: [] for k in ("bank", "val", "test", "ood_bank", "ood_test")}
    for split in SPLITS:
        names = categories if not split.startswith("ood") else ood_categories
        for instance, name in enumerate(splits.get(split, [])):
            folder = views_root / name
            groups = _view_files(folder)
            check_image(min(path for members in groups.values() for path in members.values()), stored_size)
            for (pose, tag), members in sorted(groups.items()):
                if split == "train":
                    missing = [k for k in (0, 1, 2) if k not in members]
                    if missing:
                        raise DataError(
                            f"{folder}: triplet {pose}_{tag} is missing {pose}_{tag}_{missing[0]}.png "
                            "(train instances need left _0, centre _1 and right _2)"
                        )
                    triplets.append(tuple(str(members[k]) for k in (0, 1, 2)))
                if 1 in members:
                    target = "bank" if split == "train" else split
                    raw[target].append((str(members[1]), name.split("/")[0], pose, instance))
    # Pose labels: the table's indices, or the indices found remapped to 0..P-1 (non-contiguous is fine).
    if poses is not None:
        n_poses = len(poses)
        for entries in raw.values():
            for path, _, pose, _ in entries:
                if pose >= n_poses:
                    raise DataError(
                        f"pose index {pose} of {path} is outside the pose table ({n_poses} poses in {root}/meta.json)"
                    )
        remap = {p: p for p in range(n_poses)}
    else:
        found = sorted({pose for entries in raw.values() for _, _, pose, _ in entries})
        remap = {p: i for i, p in enumerate(found)}
        n_poses = len(found)
    views = {}
    for target, entries in raw.items():
        names = ood_categories if target.startswith("ood") else categories
        views[target] = [
            View(
                path,
                names.index(cat),
                remap[pose],
                inst,
                None if poses is None else tuple(float(c) for c in poses[pose]),
            )
            for path, cat, pose, inst in entries
        ]
    views["ood_pose"] = _ood_pose_views(root, splits["test"], categories, poses, ood_poses)
    return BenchmarkIndex(root, categories, ood_categories, n_poses, triplets, views)


def _ood_pose_views(
    root: Path, test_names: list[str], categories: list[str], poses: np.ndarray | None, ood_poses: np.ndarray | None
) -> list[View]:
    """Test instances at out-of-domain poses, labelled by the nearest in-domain pose."""
    if poses is None or ood_poses is None or not (root / "ood_poses").is_dir():
        return []
    labels = nearest_pose(ood_poses, poses)
    views = []
    for instance, name in enumerate(test_names):
        folder = root / "ood_poses" / name
        for index in range(len(ood_poses)):
            path = folder / f"{index}.png"
            if not path.is_file():
                raise DataError(f"{path} not found: ood_poses/ needs one view per out-of-domain pose in meta.json")
            views.append(
                View(
                    str(path),
                    categories.index(name.split("/")[0]),
                    int(labels[index]),
                    instance,
                    tuple(float(c) for c in ood_poses[index]),
                )
            )
    return views


# --------------------------------------------------------------------------------------------------
# Datasets


def _load(path: str, stored_size: int | None) -> Image.Image:
    return check_image(path, stored_size)


class TripletDataset(Dataset):
    """(T1(x_C), T2(x_C), x_L, x_C, x_R): five image tensors and nothing else (no pose, no category)."""

    def __init__(
        self, triplets: list[tuple[str, str, str]], semantic: T.Compose, plain: T.Compose, stored_size: int | None
    ) -> None:
        self.triplets, self.semantic, self.plain, self.stored_size = triplets, semantic, plain, stored_size

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        left, centre, right = (_load(p, self.stored_size) for p in self.triplets[index])
        return self.semantic(centre), self.semantic(centre), self.plain(left), self.plain(centre), self.plain(right)


class ViewDataset(Dataset):
    """(image, category, pose, index, instance, view vector): labelled views for kNN and probes.

    `index` de-duplicates DDP padding; `instance` and the view vector (NaN without a pose table) pair views
    of one object for the relative-pose probe.
    """

    def __init__(self, views: list[View], plain: T.Compose, stored_size: int | None) -> None:
        self.views, self.plain, self.stored_size = views, plain, stored_size

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, int, int, torch.Tensor]:
        view = self.views[index]
        direction = torch.tensor(view.direction if view.direction is not None else (float("nan"),) * 3)
        return self.plain(_load(view.path, self.stored_size)), view.category, view.pose, index, view.instance, direction


# --------------------------------------------------------------------------------------------------
# The DataModule

VAL_SETS = ("bank", "val")
TEST_SETS = ("bank", "val", "test", "ood_pose", "ood_bank", "ood_test")


class PoseBenchmarkDataModule(MethodDataModule):
    def __init__(self, cfg: PoseDataConfig) -> None:
        super().__init__(cfg)
        self._index: BenchmarkIndex | None = None

    # ---- the runner's calls

    def check(self) -> None:
        _ = self.index

    def module_kwargs(self) -> dict[str, Any]:
        index = self.index
        return {
            "categories": index.categories,
            "ood_categories": index.ood_categories,
            "n_poses": index.n_poses,
            "val_sets": self.eval_sets("validate"),
            "test_sets": self.eval_sets("test"),
        }

    def export_meta(self) -> ExportMeta:
        cfg = self.cfg
        return ExportMeta(
            input_size=[3, cfg.image_size, cfg.image_size],
            mean=list(cfg.mean),
            std=list(cfg.std),
            interpolation="bilinear",
            class_names=list(self.index.categories),
            extra={"output": "pooled feature (B, 8*width); net.features(x) also gives layer3/layer4"},
        )

    def export_sample(self, n: int) -> torch.Tensor:
        views = ViewDataset(self.index.views["val"][:n], self.plain_transform(), self.stored_size)
        return torch.stack([views[i][0] for i in range(len(views))])

    # ---- data

    @property
    def stored_size(self) -> int | None:
        if self.cfg.source is PoseDataSource.generate:
            return self.cfg.stored_size or self.cfg.generate.render_size
        return self.cfg.stored_size

    @property
    def index(self) -> BenchmarkIndex:
        if self._index is None:
            self._index = read_benchmark(self._root(), self.stored_size)
        return self._index

    def _root(self) -> Path:
        cfg = self.cfg
        if cfg.source is PoseDataSource.generate:
            check_generator(cfg.generate)
            return generate(cfg.generate, cfg.root)
        if not cfg.root:
            raise DataError(
                "data.root is not set: point data.root at the pose benchmark (e.g. the authors' ShapeNet "
                "renders, pwang.pw/trajSSL) holding splits.json and views/<category>/<instance>/"
                "<pose>_<tag>_<k>.png, or set data.source=generate"
            )
        return Path(cfg.root).expanduser()

    def eval_sets(self, stage: str) -> list[str]:
        names = VAL_SETS if stage in ("fit", "validate") else TEST_SETS
        return [n for n in names if self.index.views.get(n)]

    def plain_transform(self) -> T.Compose:
        cfg = self.cfg
        return T.Compose([T.Resize(cfg.image_size, antialias=True), T.ToTensor(), T.Normalize(cfg.mean, cfg.std)])

    def semantic_transform(self) -> T.Compose:
        cfg, aug = self.cfg, self.cfg.augment
        return T.Compose(
            [
                T.RandomResizedCrop(cfg.image_size, scale=(aug.min_scale, 1.0), antialias=True),
                T.RandomHorizontalFlip(aug.hflip),
                T.RandomApply([T.ColorJitter(*aug.color_jitter)], p=aug.color_jitter_prob),
                T.RandomGrayscale(aug.grayscale_prob),
                T.RandomSolarize(128, p=aug.solarize_prob),
                T.ToTensor(),
                T.Normalize(cfg.mean, cfg.std),
            ]
        )

    def prepare_data(self) -> None:
        _ = self.index  # renders once per node (cached) before any rank reads

    def setup(self, stage: str) -> None:
        index = self.index
        if stage == "fit":
            self.train_set = TripletDataset(
                index.triplets, self.semantic_transform(), self.plain_transform(), self.stored_size
            )
        self.eval_datasets = {
            name: ViewDataset(index.views[name], self.plain_transform(), self.stored_size)
            for name in index.views
            if index.views[name]
        }

    def train_dataloader(self) -> DataLoader:
        batch = self.cfg.batch_size_per_device
        return DataLoader(
            self.train_set,
            batch_size=batch,
            shuffle=True,
            drop_last=len(self.train_set) >= batch,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(name) for name in self.eval_sets("validate")]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(name) for name in self.eval_sets("test")]

    def _eval_loader(self, name: str) -> DataLoader:
        batch = self.cfg.eval_batch_size_per_device or self.cfg.batch_size_per_device
        return DataLoader(
            self.eval_datasets[name],
            batch_size=batch,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )
