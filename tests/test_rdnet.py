"""RDNet comes from timm with the paper's sizes and per-variant drop path; LR scaling rules."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.rdnet.net import PAPER_DROP_PATH, build_rdnet
from tenfold.config import LRScaling, OptimConfig
from tenfold.optim import scaled_lr

REDUCED = {  # digest §8: the reduced RDNet used by the demo
    "num_init_features": 32, "growth_rates": [32, 48, 64, 96], "num_blocks_list": [3, 3, 3, 3],
    "is_downsample_block": [None, True, True, True], "block_type": ["Block", "Block", "BlockESE", "BlockESE"],
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_rdnet_tiny_has_the_papers_parameter_count() -> None:
    assert n_params(build_rdnet("rdnet_tiny", 1000)) == 23_863_008


def test_reduced_rdnet_matches_the_digest_and_keeps_gammas_at_1e6() -> None:
    model = build_rdnet("rdnet_tiny", 10, arch=REDUCED)
    assert n_params(model) == 2_295_442
    gammas = [p for name, p in model.named_parameters() if name.endswith("gamma")]
    assert gammas and all(torch.all(g == 1e-6) for g in gammas)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("name", sorted(PAPER_DROP_PATH))
def test_drop_path_defaults_to_the_papers_rate(name: str) -> None:
    model = build_rdnet(name, 10, arch=REDUCED)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert max(rates) == pytest.approx(PAPER_DROP_PATH[name])


def test_unknown_variant() -> None:
    with pytest.raises(ValueError, match="rdnet_tiny, rdnet_small"):
        build_rdnet("rdnet_huge", 10)


def test_lr_scaling_rules() -> None:
    cfg = OptimConfig(lr=1e-3, reference_batch_size=512)
    assert scaled_lr(cfg, 128) == 1e-3
    cfg.lr_scaling = LRScaling.linear
    assert scaled_lr(cfg, 128) == pytest.approx(2.5e-4)
    cfg.lr_scaling = LRScaling.sqrt
    assert scaled_lr(cfg, 128) == pytest.approx(5e-4)
