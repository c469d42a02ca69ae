"""Data of the GAN-fingerprinting methods: the bundled digits as (1, 8, 8) tensors in [-1, 1], or an
image-to-image task folder, and the generator population the fingerprinting method is evaluated on.

The digits are `datamodules.digits.digit_images` (the platform's fixed 1257/270/270 split), read as
grey tensors. With them the fingerprinting DataModule trains (once, then from a cache outside the repo) the
protected DCGAN, the reference generators used during embedding and the held-out independent ones. With an
image-to-image task (`data.source=i2i`, `datamodules/image_to_image.py`) it loads the owner's generator files
instead. Either way it trains C0 on the labelled real images, and its test loader yields suspect indices, so
Lightning's DistributedSampler shards suspects by rank.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from datamodules.digits import digit_images
from datamodules.image_to_image import check_layout, read_task
from datamodules.split_loaders import SplitDataModule
from tenfold.errors import ConfigError, DataError
from tenfold.method import ExportMeta


@lru_cache(maxsize=2)
def digit_tensors(split_seed: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """{"train", "val", "test"} -> (images (N, 1, 8, 8) in [-1, 1], labels (N,))."""
    out = {}
    for split, pairs in digit_images(split_seed).items():
        pixels = np.stack([np.asarray(image)[:, :, 0] for image, _ in pairs]).astype(np.float32)
        out[split] = (torch.from_numpy(pixels / 127.5 - 1.0)[:, None], torch.tensor([label for _, label in pairs]))
    return out


@dataclass
class GanDataConfig:
    digits_split_seed: int = 0
    batch_size_per_device: int = 64
    eval_batch_size_per_device: int | None = None
    num_workers: int = 0


class GanDataModule(SplitDataModule):
    """Real digits for DCGAN training; val/test real images are the reference side of the pixel-FID."""

    def __init__(self, cfg: GanDataConfig) -> None:
        super().__init__(cfg)

    def setup(self, stage: str) -> None:
        data = digit_tensors(self.cfg.digits_split_seed)
        self.train_set, self.val_set, self.test_set = (TensorDataset(*data[s]) for s in ("train", "val", "test"))

    def export_meta(self) -> ExportMeta:
        return ExportMeta(input_size=[1, 8, 8], extra={"output_range": [-1.0, 1.0]})

    def export_sample(self, n: int) -> Any:
        return None  # the export is a generator: its input is a latent, nothing to trace from the data


class DataSource(enum.Enum):
    digits = "digits"  # the bundled digits and an in-project DCGAN population (the CPU demo)
    i2i = "i2i"  # an image-to-image task (the paper's setting): task images and generator files


@dataclass
class PopulationConfig:
    """Generators trained in-project; seeds of the three roles must be disjoint (checked)."""

    z_dim: int = 32
    width: int = 64
    iterations: int = 3000  # DCGAN iterations per generator (digest section 12)
    protected_seed: int = 0
    reference_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # used during embedding
    independent_seeds: list[int] = field(default_factory=lambda: [4, 5, 6])  # held out: p0 and false positives
    other_width: int = 32  # one more held-out independent generator of another width ...
    other_width_seed: int = 7  # ... from this seed
    classifier_seed: int = 100  # C0
    classifier_width: int = 64  # C0 (and C*); its embedding has 4x this many features
    classifier_epochs: int = 30


@dataclass
class FingerprintDataConfig:
    source: DataSource = DataSource.digits
    # i2i: the task folder (input/ and target/, see datamodules/image_to_image.py) and the generator files
    # (tenfold export folders or torch.export .pt2 programs). References are used during embedding; the
    # independents are held out for p0 and the false-positive side (data.population then sets only C0).
    root: str | None = None
    protected_generator: str | None = None
    reference_generators: list[str] = field(default_factory=list)
    independent_generators: list[str] = field(default_factory=list)
    digits_split_seed: int = 0
    population: PopulationConfig = field(default_factory=PopulationConfig)
    cache_dir: str | None = None  # None: $XDG_CACHE_HOME (or ~/.cache)/tenfold/gan_fingerprint
    batch_size_per_device: int = 64
    eval_batch_size_per_device: int | None = None
    num_workers: int = 0


def check_seed_sets(p: PopulationConfig) -> None:
    """Reference generators shape C* during embedding; reusing one as an 'independent' would make the
    false-positive side look better than it is (digest section 10)."""
    roles = {
        "protected_seed": {p.protected_seed},
        "reference_seeds": set(p.reference_seeds),
        "independent_seeds": set(p.independent_seeds) | {p.other_width_seed},
    }
    names = list(roles)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = roles[a] & roles[b]
            if shared:
                raise ConfigError(
                    f"data.population: seed(s) {sorted(shared)} appear in both {a} and {b} "
                    "(independent_seeds includes other_width_seed); the seed sets must be disjoint"
                )
    if len(p.independent_seeds) + 1 < 2:
        raise ConfigError("data.population.independent_seeds: at least one held-out independent seed is needed")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tenfold" / "gan_fingerprint"


class SuspectIndices(Dataset):
    """0..S-1: one test item per suspect model (built inside test_step on the rank that holds it)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> int:
        return index


class FingerprintDataModule(SplitDataModule):
    def __init__(self, cfg: FingerprintDataConfig) -> None:
        super().__init__(cfg)
        self.population = None  # lightning_modules.gan_fingerprint.population.Population after setup
        self.task = None  # lightning_modules.gan_fingerprint.task.Task after setup
        self.suspects: list = []
        self._i2i = None  # the image-to-image task folder, read once

    def check(self) -> None:
        cfg = self.cfg
        if cfg.source is DataSource.i2i:
            check_layout(cfg.root)
            if not cfg.protected_generator:
                raise DataError(
                    "data.source=i2i needs data.protected_generator: set it to the owner's image-to-image generator "
                    "(a torch.export .pt2 program or a tenfold export folder)"
                )
            for key in ("reference_generators", "independent_generators"):
                if not getattr(cfg, key):
                    role = "used during embedding" if key.startswith("ref") else "held out for p0 and false positives"
                    raise DataError(f"data.source=i2i needs data.{key}=[...] (at least one generator file, {role})")
            paths = [cfg.protected_generator, *cfg.reference_generators, *cfg.independent_generators]
            for path in paths:
                if not Path(path).exists():
                    raise DataError(f"generator file {path} (data.*_generator*) does not exist")
            resolved = [str(Path(p).resolve()) for p in paths]
            repeated = sorted({p for p in resolved if resolved.count(p) > 1})
            if repeated:
                raise ConfigError(f"data: generator file(s) {repeated} given in more than one role; the roles "
                                  "(protected, reference, independent) must be disjoint")
            return
        check_seed_sets(cfg.population)

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.cache_dir) if self.cfg.cache_dir else default_cache_dir()

    def _smoke(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return bool(trainer is not None and trainer.fast_dev_run)

    def module_kwargs(self) -> dict[str, Any]:
        """The task's shape, as the module builds C and the fingerprint buffer from it (plain types)."""
        if self.cfg.source is DataSource.i2i:
            task = self._i2i_data()
            image, query = task.targets["train"][0].shape[1:], task.inputs["train"].shape[1:]
            return {"class_names": task.class_names, "image_shape": list(image), "query_shape": list(query),
                    "input_kind": "image"}
        return {"class_names": [str(d) for d in range(10)], "image_shape": [1, 8, 8],
                "query_shape": [self.cfg.population.z_dim], "input_kind": "latent"}

    def _i2i_data(self) -> Any:
        if self._i2i is None:
            self._i2i = read_task(self.cfg.root)
        return self._i2i

    def _clean(self) -> dict[str, tuple[Tensor, Tensor]]:
        if self.cfg.source is DataSource.i2i:
            return self._i2i_data().targets
        return digit_tensors(self.cfg.digits_split_seed)

    def _build_population(self, train_missing: bool) -> Any:
        from lightning_modules.gan_fingerprint import population

        clean = self._clean()["train"]
        if self.cfg.source is DataSource.i2i:
            return population.load_i2i_population(
                self.cfg, self._i2i_data().inputs["train"], clean, len(self._i2i_data().class_names),
                self.cache_dir, smoke=self._smoke(), train_missing=train_missing,
            )
        return population.build_population(
            self.cfg.population, clean, self.cache_dir, smoke=self._smoke(), train_missing=train_missing
        )

    def prepare_data(self) -> None:
        # Local rank 0 trains what the cache lacks; the other ranks then read it in setup().
        self._build_population(train_missing=True)

    def setup(self, stage: str) -> None:
        from lightning_modules.gan_fingerprint.hook import InputKind
        from lightning_modules.gan_fingerprint.task import Task

        if self.population is None:
            self.population = self._build_population(train_missing=False)
        clean = self._clean()
        if self.cfg.source is DataSource.i2i:
            self.task = Task(InputKind.image, clean, inputs=self._i2i_data().inputs)
        else:
            self.task = Task(InputKind.latent, clean, z_dim=self.cfg.population.z_dim)
        self.train_set, self.val_set = TensorDataset(*clean["train"]), TensorDataset(*clean["val"])

    def test_dataloader(self) -> Any:
        # `suspects` is filled by the method's setup (it knows the attacks); one whole model per test step.
        self.test_set = SuspectIndices(len(self.suspects))
        return self._loader(self.test_set, 1, train=False)

    def export_sample(self, n: int) -> Any:
        """Real validation images: C*'s input (no population needed)."""
        return self._clean()["val"][0][:n]

    def export_meta(self) -> ExportMeta:
        kwargs = self.module_kwargs()
        return ExportMeta(
            input_size=kwargs["image_shape"], class_names=kwargs["class_names"], extra={"input_range": [-1.0, 1.0]}
        )
