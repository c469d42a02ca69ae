"""The generator population of the digits demo, trained once and cached outside the repository.

Roles [R: digest section 12]: the protected G, reference generators G'_k (seen during embedding), held-out
independent generators (p0 and the false-positive side, never seen during embedding) including one of
another width, and the unmarked classifier C0. Each member is a pure function of its seed and settings;
its cache file name is a hash of them, so a changed setting never reads a stale file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from datamodules.gan_fingerprint import PopulationConfig, check_seed_sets
from lightning_modules.gan_fingerprint.classifier import DigitClassifier, train_classifier
from lightning_modules.gan_fingerprint.gan import Generator, train_generator
from tenfold.checkpoint_io import atomic_write, load_weights_only
from tenfold.errors import DataError

SMOKE_ITERATIONS = 20  # fast_dev_run: every code path once, not a usable population


@dataclass
class Population:
    protected: Generator
    references: dict[str, Generator]
    independents: dict[str, Generator]
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
    epochs = 1 if smoke else p.classifier_epochs
    data_id = hashlib.sha1(images.numpy().tobytes()).hexdigest()[:12]
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
    settings = {"seed": p.classifier_seed, "epochs": epochs, "width": p.classifier_width, "data": data_id}
    c0 = _cached(
        _cache_file(cache_dir, "classifier-c0", settings),
        lambda: train_classifier(images, labels, p.classifier_seed, epochs, width=p.classifier_width),
        DigitClassifier(10, p.classifier_width, 4 * p.classifier_width),
        train_missing,
    )
    roles = {m.name: m.role for m in members(p)}
    return Population(
        protected=gens["protected"],
        references={n: g for n, g in gens.items() if roles[n] == "reference"},
        independents={n: g for n, g in gens.items() if roles[n] == "independent"},
        classifier=c0,
    )
