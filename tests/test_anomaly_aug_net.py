"""DRAEM's networks and init, the losses, and the split-training properties."""

from __future__ import annotations

import functools

import pytest
import torch

from lightning_modules.anomaly_aug.config import AnomalyAugConfig
from lightning_modules.anomaly_aug.net import (
    DiscriminativeSubNetwork,
    ReconstructiveSubNetwork,
    build_detector,
)
from tenfold.config import OmegaConf, compose, to_plain


@functools.cache
def _sources() -> torch.Tensor:
    from lightning_modules.anomaly_aug.sources import bundled_sources

    return bundled_sources(32)


def _module(**model: object):
    from lightning_modules.anomaly_aug.module import AnomalyAugModule

    overrides = {"model": {"recon_width": 4, "disc_width": 2, "score_filter_size": 5, **model},
                 "data": {"image_size": 32, "bundled_sources": True}}
    cfg = compose(AnomalyAugConfig, [("test", OmegaConf.create(overrides))])
    module = AnomalyAugModule(to_plain(cfg), defect_names=["x"], category="disc")
    module.sources = _sources()
    return module


def test_full_size_networks_have_draems_parameter_count() -> None:
    with torch.device("meta"):  # shapes only, no memory
        r, s = ReconstructiveSubNetwork(base_width=128), DiscriminativeSubNetwork(base_width=64)
    assert sum(p.numel() for p in r.parameters()) == 69_048_579
    assert sum(p.numel() for p in s.parameters()) == 28_374_146  # 97.4 M together, as DRAEM's


def test_shapes_and_draem_init() -> None:
    torch.manual_seed(0)
    net = build_detector(16, 8, 5)
    maps, scores = net(torch.rand(2, 3, 64, 96))
    assert maps.shape == (2, 64, 96) and scores.shape == (2,) and ((maps >= 0) & (maps <= 1)).all()
    convs = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, torch.nn.Conv2d)])
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert convs.std().item() == pytest.approx(0.02, rel=0.02) and abs(convs.mean().item()) < 1e-3
    assert all(float(b.bias.detach().abs().max()) == 0 for b in bns)
    gammas = torch.cat([b.weight.detach() for b in bns])
    assert gammas.mean().item() == pytest.approx(1.0, abs=0.01) and gammas.std().item() == pytest.approx(0.02, rel=0.2)


def test_losses_are_zero_for_a_perfect_prediction() -> None:
    module = _module()
    x = torch.rand(2, 3, 32, 32)
    assert float(module.reconstruction_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 4:10, 4:10] = 1
    logits = torch.cat((-20 * (masks * 2 - 1), 20 * (masks * 2 - 1)), 1)
    assert float(module.segmentation_loss(logits, masks)) < 1e-8
    assert float(module.segmentation_loss(-logits, masks)) > 1.0


def _half_batches(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)


def test_a_segmentation_step_leaves_r_bit_identical() -> None:
    module = _module()
    module.net.train()
    optimizer = torch.optim.Adam(module.net.parameters(), lr=1e-2)
    a, b = _half_batches(0)
    losses = module.split_losses(a, b, torch.Generator().manual_seed(3))
    # after the forward passes (R's BN statistics moved with half A's batch, as in training; half B's
    # reconstruction ran in eval mode and moved nothing)
    before = {k: v.clone() for k, v in module.net.reconstructive.state_dict().items()}
    s_before = {k: v.clone() for k, v in module.net.discriminative.state_dict().items()}
    losses["seg"].backward()
    optimizer.step()
    after = module.net.reconstructive.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN statistics
    assert any(not torch.equal(s_before[k], v) for k, v in module.net.discriminative.state_dict().items())


def test_split_losses_touch_disjoint_networks_and_halves() -> None:
    module = _module()
    a, b = _half_batches(1)
    losses = module.split_losses(a, b, torch.Generator().manual_seed(4))
    r_params = list(module.net.reconstructive.parameters())
    s_params = list(module.net.discriminative.parameters())
    assert all(g is None for g in torch.autograd.grad(losses["seg"], r_params, allow_unused=True))
    assert all(g is None for g in torch.autograd.grad(losses["rec"], s_params, allow_unused=True,
                                                      retain_graph=True))
    # L_rec does not depend on half B at all (R never sees it in training)
    other_b = torch.rand_like(b)
    again = module.split_losses(a, other_b, torch.Generator().manual_seed(4))
    assert torch.equal(losses["rec"], again["rec"]) and not torch.equal(losses["seg"], again["seg"])


def test_draem_joint_training_lets_the_focal_loss_reach_r() -> None:
    module = _module(split_training=False)
    a, _ = _half_batches(2)
    module.cfg.model.simulation.p_clean = 0.0
    module.simulator = None
    losses = module.joint_losses(a, torch.Generator().manual_seed(0))
    grads = torch.autograd.grad(losses["seg"], list(module.net.reconstructive.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_paper_config_holds_the_papers_setting() -> None:
    from tenfold.cli import load_config

    cfg = load_config(["configs/anomaly_aug.yaml"], ["data.root=/data/mvtec"])
    m, d, o = cfg.model, cfg.data, cfg.optim
    assert (m.recon_width, m.disc_width, m.score_filter_size, m.split_training) == (128, 64, 21, True)
    assert (m.simulation.p_clean, m.simulation.mode.value, d.image_size, d.batch_size_per_device) == (0.5, "framework",
                                                                                                    256, 8)
    assert (o.name, o.lr, o.scheduler, list(o.decay_milestones), o.decay_rate) == ("adam", 1e-4, "multistep",
                                                                                  [400, 600], 0.1)
    assert cfg.trainer.max_epochs == 700 and cfg.checkpoint.monitor == "step"
