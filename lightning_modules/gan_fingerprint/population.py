"""The generator population a fingerprinting run is evaluated on, and C0.

Roles [R: digest section 12]: the protected G, reference generators G'_k (seen during embedding), held-out
independent generators (p0 and the false-positive side, never seen during embedding), and the unmarked
classifier C0. In the digits demo every member is a DCGAN trained once from its seed (one held-out
independent of another width) and cached outside the repository; in an image-to-image task the generators
are the owner's files (`load_i2i_population`) and only C0 is trained. A cache file name is a hash of
everything its member depends on, so a changed setting or data never reads a stale file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from datamodules.gan_fingerprint import FingerprintDataConfig, PopulationConfig, check_seed_sets
from lightning_modules.gan_fingerprint import commitment
from lightning_modules.gan_fingerprint.classifier import DigitClassifier, train_classifier
from lightning_modules.gan_fingerprint.gan import Generator, train_generator
from lightning_modules.gan_fingerprint.generator_files import generator_name, load_generator
from tenfold.checkpoint_io import atomic_write, load_weights_only
from tenfold.errors import ConfigError, DataError

SMOKE_ITERATIONS = 20  # fast_dev_run: every code path once, not a usable population


@dataclass
class Population:
    protected: nn.Module
    references: dict[str, nn.Module]
    independents: dict[str, nn.Module]
    classifier: DigitClassifier  # C0

    def to(self, device: torch.device) -> Population:
        for m in (self.protected, *self.references.values(), *self.independents.values(), self.classifier):
            m.to(device)
        return self


@dataclass(frozen=True)
class Member:
    name: str
    role: str  # protected | reference | independent
    seed: int
    width: int


def members(p: PopulationConfig) -> list[Member]:
    out = [Member("protected", "protected", p.protected_seed, p.width)]
    out += [Member(f"reference_s{s}", "reference", s, p.width) for s in p.reference_seeds]
    out += [Member(f"independent_s{s}", "independent", s, p.width) for s in p.independent_seeds]
    out.append(
        Member(f"independent_w{p.other_width}_s{p.other_width_seed}", "independent", p.other_width_seed, p.other_width)
    )
    return out


def _cache_file(cache_dir: Path, kind: str, settings: dict) -> Path:
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return cache_dir / f"{kind}-{digest}.pt"


def _cached(path: Path, build, make: nn.Module, train_missing: bool) -> nn.Module:
    if path.is_file():
        make.load_state_dict(load_weights_only(path))
        return make.eval()
    if not train_missing:
        raise DataError(
            f"{path} is missing: the population is trained in prepare_data (local rank 0); "
            "delete data.cache_dir to rebuild it"
        )
    model = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))
    return model.eval()


def build_population(
    p: PopulationConfig, train: tuple[Tensor, Tensor], cache_dir: Path, smoke: bool = False, train_missing: bool = True
) -> Population:
    """Load every member from the cache, training (on this process) the ones it lacks."""
    check_seed_sets(p)
    images, labels = train
    iterations = min(p.iterations, SMOKE_ITERATIONS) if smoke else p.iterations
    data_id = _data_id(images)
    gens: dict[str, Generator] = {}
    for m in members(p):
        settings = {"seed": m.seed, "width": m.width, "z_dim": p.z_dim, "iterations": iterations, "data": data_id}
        path = _cache_file(cache_dir, f"generator-{m.name}", settings)
        if not path.is_file() and train_missing:
            rank_zero_info(
                f"gan_fingerprint: training {m.name} (seed {m.seed}, width {m.width}, {iterations} "
                f"iterations) into {path}"
            )
        gens[m.name] = _cached(
            path,
            lambda m=m: train_generator(images, m.seed, m.width, iterations, p.z_dim),
            Generator(p.z_dim, m.width),
            train_missing,
        )
    c0 = _classifier(p, images, labels, 10, cache_dir, smoke, train_missing)
    roles = {m.name: m.role for m in members(p)}
    return Population(
        protected=gens["protected"],
        references={n: g for n, g in gens.items() if roles[n] == "reference"},
        independents={n: g for n, g in gens.items() if roles[n] == "independent"},
        classifier=c0,
    )


def _data_id(*tensors: Tensor) -> str:
    return hashlib.sha1(b"".join(t.numpy().tobytes() for t in tensors)).hexdigest()[:12]


def _classifier(
    p: PopulationConfig, images: Tensor, labels: Tensor, num_classes: int, cache_dir: Path, smoke: bool,
    train_missing: bool,
) -> DigitClassifier:
    """C0, trained on the labelled real images (cached)."""
    epochs = 1 if smoke else p.classifier_epochs
    settings = {"seed": p.classifier_seed, "epochs": epochs, "width": p.classifier_width, "classes": num_classes,
                "data": _data_id(images, labels)}
    return _cached(
        _cache_file(cache_dir, "classifier-c0", settings),
        lambda: train_classifier(images, labels, p.classifier_seed, epochs, width=p.classifier_width,
                                 num_classes=num_classes),
        DigitClassifier(num_classes, p.classifier_width, 4 * p.classifier_width, in_channels=images.shape[1]),
        train_missing,
    )


def load_i2i_population(
    cfg: FingerprintDataConfig,
    inputs: Tensor,
    clean: tuple[Tensor, Tensor],
    num_classes: int,
    cache_dir: Path,
    smoke: bool = False,
    train_missing: bool = True,
) -> Population:
    """The owner's image-to-image generators from their files, checked against the task; C0 from the cache."""
    def load(path: str, key: str) -> nn.Module:
        g = load_generator(path, key, allow_torchscript=False)
        with torch.no_grad():
            shape = tuple(g(inputs[:2]).shape[1:])
        if shape != tuple(clean[0].shape[1:]):
            raise DataError(
                f"{key}={path} answers data.root/input images of shape {tuple(inputs.shape[1:])} with images of "
                f"shape {shape}, but data.root/target images are {tuple(clean[0].shape[1:])}: not a generator of "
                "this task"
            )
        return g

    protected = load(cfg.protected_generator, "data.protected_generator")
    roles = {"reference": cfg.reference_generators, "independent": cfg.independent_generators}
    loaded: dict[str, dict[str, nn.Module]] = {}
    seen = {commitment.weights_hash(protected): "data.protected_generator"}
    for role, paths in roles.items():
        loaded[role] = {}
        for i, path in enumerate(paths):
            key = f"data.{role}_generators[{i}]"
            g = load(path, key)
            digest = commitment.weights_hash(g)
            if digest in seen:  # the same weights under two names would bias p0 or the embedding (digest 10)
                raise ConfigError(f"{key}={path} holds the same weights as {seen[digest]}: the generator sets of "
                                  "the three roles must be disjoint")
            seen[digest] = key
            name = generator_name(path)
            if name == "protected" or any(name in members for members in loaded.values()):
                name = f"{role}_{i}_{name}"  # two files of one stem: keep both, tell them apart
            loaded[role][name] = g
    c0 = _classifier(cfg.population, *clean, num_classes, cache_dir, smoke, train_missing)
    return Population(protected, loaded["reference"], loaded["independent"], c0)
