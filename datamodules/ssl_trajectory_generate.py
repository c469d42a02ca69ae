"""The pose benchmark generator: real meshes rendered offline on CPU into the benchmark layout.

Paper §2.1, with pybullet_data's meshes standing in for ShapeNet:
  - in-domain poses: Fib(n_poses) on the viewing sphere; out-of-domain poses: Fib(n_ood_poses);
  - instances: per category, an anisotropic scale and a colour tint per instance, split into
    train / val / test; held-out (out-of-domain) categories split into a kNN bank and queries;
  - training triplets: for every train instance and in-domain pose p_C, p_L at 10-20° from p_C in a random
    direction and p_R = 2(p_L·p_C)p_C - p_L, written as `<pose>_t_0|1|2.png` (left, centre, right);
  - evaluation views: the centre view `<pose>_t_1.png` only.
Meshes whose renders do not change under a rotation about one of their axes are refused: their pose is
not observable. Renders are deterministic (fixed seed per instance) and cached under a directory named
by the hash of this config; the directory appears complete (one rename) or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lightning_modules.ssl_trajectory.poses import fibonacci_sphere, triplet_poses
from lightning_modules.ssl_trajectory.render import Instance, MeshRenderer, find_symmetry, mesh_path
from tenfold.errors import ConfigError

FORMAT_VERSION = 1


@dataclass
class GeneratorConfig:
    categories: list[str] = field(default_factory=lambda: ["duck", "teddy", "bunny", "blob_4"])
    ood_categories: list[str] = field(default_factory=lambda: ["torus", "jenga"])  # held out from training
    train_instances: int = 6
    val_instances: int = 2
    test_instances: int = 2
    ood_bank_instances: int = 2  # held-out-category instances that only serve as the kNN bank
    ood_test_instances: int = 2
    n_poses: int = 50  # in-domain Fib(50)
    n_ood_poses: int = 100  # out-of-domain Fib(100), rendered for the test instances
    triplet_min_deg: float = 10.0
    triplet_max_deg: float = 20.0
    render_size: int = 64  # stored size; the datamodule resizes to data.image_size
    scale_jitter: float = 0.25  # each mesh axis scaled by U(1 - j, 1 + j) per instance
    symmetry_tol: float = 0.01  # mean |difference| on [0, 1] below which two views count as identical
    seed: int = 0


def check_generator(cfg: GeneratorConfig) -> None:
    """Config errors first (cheap), one line each."""
    names = list(cfg.categories) + list(cfg.ood_categories)
    if not cfg.categories:
        raise ConfigError("data.generate.categories is empty: name at least one mesh (e.g. [duck, teddy])")
    if len(set(names)) != len(names):
        raise ConfigError(f"data.generate: a category is listed twice in categories/ood_categories: {names}")
    for name in names:
        mesh_path(name)
    if not 0 < cfg.triplet_min_deg <= cfg.triplet_max_deg < 90:
        raise ConfigError(
            "data.generate.triplet_min_deg/max_deg must satisfy 0 < min <= max < 90 "
            f"(got {cfg.triplet_min_deg}, {cfg.triplet_max_deg})"
        )
    if cfg.train_instances < 1 or cfg.val_instances < 1 or cfg.test_instances < 1 or cfg.n_poses < 2:
        raise ConfigError("data.generate needs train/val/test_instances >= 1 and n_poses >= 2")
    if cfg.ood_categories and (cfg.ood_bank_instances < 1 or cfg.ood_test_instances < 1):
        raise ConfigError("data.generate.ood_bank_instances and ood_test_instances must be >= 1 with ood_categories")


def refuse_symmetric(cfg: GeneratorConfig) -> None:
    """ConfigError naming the first mesh whose pose is not observable."""
    renderer = MeshRenderer(32)
    try:
        for name in list(cfg.categories) + list(cfg.ood_categories):
            found = find_symmetry(renderer, Instance(name), cfg.symmetry_tol)
            if found:
                axis, degrees, diff = found
                raise ConfigError(
                    f"data.generate: '{name}' looks the same after a {degrees:g}° turn about its {axis} axis "
                    f"(mean difference {diff:.4f} < symmetry_tol {cfg.symmetry_tol}): its pose is not observable;"
                    f" remove it from the categories or use a textured/asymmetric mesh"
                )
    finally:
        renderer.close()


def config_digest(cfg: GeneratorConfig) -> str:
    text = json.dumps({"format": FORMAT_VERSION, **asdict(cfg)}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tenfold" / "ssl_trajectory"


def benchmark_dir(cfg: GeneratorConfig, cache_root: str | None) -> Path:
    return Path(cache_root or default_cache_root()) / f"bench-{config_digest(cfg)}"


def _instances(cfg: GeneratorConfig, category: str, count: int, offset: int) -> list[Instance]:
    out = []
    for i in range(offset, offset + count):
        seed = int.from_bytes(hashlib.sha1(f"{cfg.seed}/{category}/{i}".encode()).digest()[:4], "little")
        rng = np.random.default_rng(seed)
        scale = tuple(float(s) for s in rng.uniform(1 - cfg.scale_jitter, 1 + cfg.scale_jitter, 3))
        rgba = (*(float(c) for c in rng.uniform(0.35, 1.0, 3)), 1.0)
        out.append(Instance(category, scale, rgba))
    return out


def _save(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image).save(path, format="PNG", compress_level=1)


def generate(cfg: GeneratorConfig, cache_root: str | None = None) -> Path:
    """The benchmark directory for `cfg`, rendered now unless already cached."""
    target = benchmark_dir(cfg, cache_root)
    if (target / "splits.json").is_file():
        return target
    check_generator(cfg)
    refuse_symmetric(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _render_all(cfg, tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same render first: its copy is identical
            if not (target / "splits.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _render_all(cfg: GeneratorConfig, out: Path) -> None:
    poses = fibonacci_sphere(cfg.n_poses)
    ood_poses = fibonacci_sphere(cfg.n_ood_poses) if cfg.n_ood_poses else np.zeros((0, 3))
    rng = np.random.default_rng(cfg.seed)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": [], "ood_bank": [], "ood_test": []}
    plan = []
    for category in cfg.categories:
        counts = {"train": cfg.train_instances, "val": cfg.val_instances, "test": cfg.test_instances}
        plan.append((category, counts))
    for category in cfg.ood_categories:
        plan.append((category, {"ood_bank": cfg.ood_bank_instances, "ood_test": cfg.ood_test_instances}))
    renderer = MeshRenderer(cfg.render_size)
    try:
        for category, counts in plan:
            offset = 0
            for split, count in counts.items():
                for index, instance in enumerate(_instances(cfg, category, count, offset)):
                    name = f"{category}/{split}{index:03d}"
                    splits[split].append(name)
                    folder = out / "views" / name
                    folder.mkdir(parents=True)
                    renderer.load(instance)
                    if split == "train":
                        left, centre, right = triplet_poses(poses, cfg.triplet_min_deg, cfg.triplet_max_deg, rng)
                        for pose, views in enumerate(zip(left, centre, right)):
                            for k, view in enumerate(views):
                                _save(renderer.render(view), folder / f"{pose}_t_{k}.png")
                    else:
                        for pose, view in enumerate(poses):
                            _save(renderer.render(view), folder / f"{pose}_t_1.png")
                    if split == "test" and len(ood_poses):
                        ood_folder = out / "ood_poses" / name
                        ood_folder.mkdir(parents=True)
                        for pose, view in enumerate(ood_poses):
                            _save(renderer.render(view), ood_folder / f"{pose}.png")
                offset += count
    finally:
        renderer.close()
    meta = {
        "poses": poses.tolist(),
        "ood_poses": ood_poses.tolist(),
        "generator": asdict(cfg),
        "format": FORMAT_VERSION,
    }
    (out / "meta.json").write_text(json.dumps(meta))
    (out / "splits.json").write_text(json.dumps(splits, indent=1))  # last: marks the directory complete
