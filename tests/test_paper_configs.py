"""One source of truth for the paper settings: the dataclass defaults hold the paper's values, and a paper YAML
(configs/<method>.yaml) only says what differs from them (data, machine, a setting the paper changes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO
from tenfold.cli import load_config
from tenfold.config import to_plain
from tenfold.registry import get_method

PAPER_CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.yaml"))

# The papers' values (digests §: rdnet 2.6, asr 3.4, loraprune 2.9, deeplens 3.4-3.5), read from the composed
# config. Required paths are given so the config composes.
PAPER_VALUES = {
    "rdnet": ([], {
        "model.name": "rdnet_tiny", "model.label_smoothing": 0.1, "model.mixup.mixup_alpha": 0.8,
        "model.mixup.cutmix_alpha": 1.0, "data.image_size": 224, "data.crop_pct": 0.9,
        "data.batch_size_per_device": 64, "data.augment.auto_augment": "rand-m9-mstd0.5-inc1",
        "data.augment.re_prob": 0.25, "optim.name": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 0.05,
        "optim.reference_batch_size": 512, "optim.warmup_epochs": 20, "optim.warmup_lr": 1e-4, "optim.min_lr": 1e-6,
        "trainer.max_epochs": 300, "trainer.accumulate_grad_batches": 2, "trainer.devices": 4,
        "trainer.precision": "16-mixed", "ema.enabled": False,
    }),
    "asr": ([], {
        "model.variant": "asr", "model.depth": 164, "model.attention": "se", "asr.psi_init": 0.1,
        "data.image_size": 32, "data.batch_size_per_device": 128, "optim.name": "momentum", "optim.lr": 0.1,
        "optim.momentum": 0.9, "optim.weight_decay": 1e-4, "optim.scheduler": "multistep",
        "optim.decay_milestones": [81, 122], "optim.decay_rate": 0.1, "trainer.max_epochs": 164,
    }),
    "loraprune": (["model.base_path=/models/llama-7b", "data.source=wikitext"], {
        "model.lora.rank": 8, "model.lora.alpha": 16.0, "model.lora.dropout": 0.05,
        "model.lora.targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "model.prune.final_sparsity": 0.5, "model.prune.every_n_steps": 10, "model.prune.ema_decay": 0.9,
        "model.prune.warmup": 0.1, "model.prune.cooldown": 0.1, "model.dtype": "float16",
        "data.context_length": 512, "data.vocabulary": "/models/llama-7b", "optim.lr": 1e-4,
        "optim.reference_batch_size": 128, "trainer.max_epochs": 2, "trainer.accumulate_grad_batches": 64,
        "data.batch_size_per_device": 2,
    }),
    "deeplens": ([], {
        "model.spec.foclen": 4.55, "model.spec.fnum": 2.0, "model.spec.hfov_deg": 40.0,
        "model.init.flat.materials": ["COC", "PS", "COC", "PS", "OKP4", "PC"], "model.init.flat.ttl": 6.37,
        "model.lr.c": 5e-4, "model.lr.d": 1e-4, "model.lr.k": 0.1, "model.lr.a": 1e-4, "optim.name": "adamw",
        "curriculum.enabled": True,
    }),
}


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: Path(p).stem)
def test_paper_yaml_only_holds_what_differs_from_the_defaults(config: str) -> None:
    raw = OmegaConf.to_container(OmegaConf.load(REPO / config), resolve=False)
    defaults = OmegaConf.create(to_plain(get_method(raw["method"]).config_class()))
    restated = [key for key, value in _leaves(raw) if key != "method"
                and value == OmegaConf.to_object(OmegaConf.create({"v": OmegaConf.select(defaults, key)}))["v"]]
    assert not restated, f"{config} restates dataclass defaults (keep the value in one place): {restated}"


@pytest.mark.parametrize("method", sorted(PAPER_VALUES))
def test_paper_config_has_the_papers_values(method: str) -> None:
    required, expected = PAPER_VALUES[method]
    cfg = OmegaConf.create(to_plain(load_config([f"configs/{method}.yaml"], required)))
    actual = {key: OmegaConf.to_object(OmegaConf.create({"v": OmegaConf.select(cfg, key)}))["v"] for key in expected}
    assert actual == expected
