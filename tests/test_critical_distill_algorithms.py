"""critical_distill's pure-torch parts: seeded siamese DSA, the DM/DC objectives and their split by class,
MTT students and the buffer guard, the utility estimators."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.critical_distill import matching, mtt, scores
from lightning_modules.critical_distill.augment import OPS, apply_transform, sample_transform
from lightning_modules.critical_distill.net import ConvNet, seeded_convnet
from tenfold.errors import ConfigError, DataError


def test_dsa_is_seeded_siamese_and_differentiable() -> None:
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    seen = set()
    for seed in range(40):
        t1 = sample_transform("_".join(OPS), 16, torch.Generator().manual_seed(seed))
        t2 = sample_transform("_".join(OPS), 16, torch.Generator().manual_seed(seed))
        assert t1 == t2  # the same generator state, the same transform: no clock
        seen.add(t1["op"])
        out = apply_transform(x, t1)
        # one transform for the whole batch: a real and a synthetic batch get the same augmentation
        torch.testing.assert_close(out[:2], apply_transform(x[:2], t1))
        torch.testing.assert_close(out[2:], apply_transform(x[2:], t1))
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0
    assert seen == set(OPS)


def test_dm_loss_vanishes_on_matching_statistics() -> None:
    net = seeded_convnet(0, 1, 10, 8, 32, 3).requires_grad_(False)
    real = torch.randn(1, 1, 8, 8)
    assert matching.dm_class_loss(net.embed, real, real.clone()) == 0
    syn = torch.randn(1, 1, 8, 8, requires_grad=True)
    loss = matching.dm_class_loss(net.embed, real, syn)
    assert loss > 0 and torch.autograd.grad(loss, syn)[0].abs().sum() > 0


def test_gradient_distance_is_dc_match_loss() -> None:
    g = [torch.randn(4, 3, 3, 3), torch.randn(4), torch.randn(5, 7)]
    assert matching.gradient_distance(g, g) == pytest.approx(0, abs=1e-5)
    # opposite gradients: 1 - (-1) = 2 per output unit of every multi-dim layer (4 + 5 rows); biases ignored
    assert matching.gradient_distance(g, [-t for t in g]) == pytest.approx(18, abs=1e-4)


def test_dc_loops_are_the_official_ones_and_unknown_ipc_explains() -> None:
    assert matching.dc_loops(1, None, None) == (1, 1) and matching.dc_loops(10, None, None) == (10, 50)
    assert matching.dc_loops(7, 3, 4) == (3, 4)
    with pytest.raises(ConfigError, match="model.ipc=7 has no DC loop setting .* set model.dc_outer_loop"):
        matching.dc_loops(7, None, None)


@pytest.mark.parametrize("objective", ["dm", "dc"])
def test_class_split_gradient_equals_whole_gradient(objective: str) -> None:
    """What DDP relies on: the gradient of the per-class sum, computed in two halves of the classes (with
    the same per-step network and per-class streams) and added, is the one-process gradient, bit for bit."""
    pools = [torch.randn(20, 1, 8, 8) + c for c in range(4)]
    syn = torch.randn(4, 1, 8, 8, requires_grad=True)

    def grad_of(classes: list[int]) -> torch.Tensor:
        net = seeded_convnet(matching.stream_seed(0, 1, 7), 1, 4, 8, 16, 3)
        if objective == "dm":
            net.requires_grad_(False)
        loss = syn.new_zeros(())
        for c in classes:
            g = matching.generator(0, 2, 7, c)
            real, s = matching.siamese(matching.sample_real(pools[c], 8, g), syn[c : c + 1], "color_crop_scale", g)
            if objective == "dm":
                loss = loss + matching.dm_class_loss(net.embed, real, s)
            else:
                loss = loss + matching.dc_class_loss(net, real, s, c)
        return torch.autograd.grad(loss, syn)[0]

    whole = grad_of([0, 1, 2, 3])
    split = grad_of([0, 2]) + grad_of([1, 3])
    assert torch.equal(whole, split)


def test_mtt_student_loss_and_gradients() -> None:
    net = ConvNet(1, 3, 8, 16, 2)
    start = mtt.flat_params(net)
    target = start + 0.01 * torch.randn_like(start)
    images = torch.randn(6, 1, 8, 8, requires_grad=True)
    labels = torch.arange(3).repeat_interleave(2)
    lr = torch.tensor(0.01, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    no_steps = mtt.trajectory_loss(net, start, target, images, labels, lr, 0, 6, None, g)
    assert float(no_steps.detach()) == pytest.approx(1.0)
    loss = mtt.trajectory_loss(net, start, target, images, labels, lr, 3, 4, "crop_scale", g)
    d_images, d_lr = torch.autograd.grad(loss, [images, lr])
    assert d_images.abs().sum() > 0 and d_lr != 0


def test_expert_buffer_refuses_another_subset(tmp_path: Path) -> None:
    net = ConvNet(1, 3, 8, 16, 2)
    x, y = torch.randn(12, 1, 8, 8), torch.arange(3).repeat(4)
    trajectory = mtt.train_expert(net, x, y, 3, 0.01, 4, None, torch.Generator().manual_seed(0))
    assert trajectory.shape == (4, sum(p.numel() for p in net.parameters()))
    path = mtt.save_buffer(tmp_path / "b.pt", trajectory[None], {"subset_hash": "aaaa"})
    assert mtt.load_buffer(path, "aaaa", trajectory.shape[1]).shape == (1, 4, trajectory.shape[1])
    with pytest.raises(DataError, match="trained on another real subset"):
        mtt.load_buffer(path, "bbbb", trajectory.shape[1])


def test_utility_estimators_are_seeded_and_monte_carlo_counts_unseen() -> None:
    x, y = torch.randn(30, 1, 8, 8), torch.arange(3).repeat(10)

    def make(seed: int) -> ConvNet:
        return seeded_convnet(seed, 1, 3, 8, 8, 2)

    a = scores.loss_init(x, y, make, runs=2, epochs=1, seed=0, batch=10)
    b = scores.loss_init(x, y, make, runs=2, epochs=1, seed=0, batch=10)
    assert torch.equal(a, b) and a.shape == (30,) and torch.isfinite(a).all()
    # the mean of the per-run contributions: each run depends on (seed, run id) only
    runs = [scores.loss_init_run(x, y, make, r, 1, 0, batch=10)[0] for r in range(2)]
    assert torch.equal(a, (runs[0] + runs[1]) / 2) and not torch.equal(runs[0], runs[1])
    acc_sum = torch.tensor([1.0, 0.0, 0.5])
    value, unseen = scores.monte_carlo_value(acc_sum, torch.tensor([2.0, 0.0, 1.0]))
    assert unseen == 1 and value.tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("indicator", ["LossInit", "LossConverge", "MonteCarlo"])
def test_runs_split_between_processes_add_up_to_the_one_process_scores(indicator: str) -> None:
    """Round by round, as 2 processes would (RunIds shares, one gather per round), the bit-identical sum."""
    from datamodules.critical_distill import RunIds

    x, y = torch.randn(30, 1, 8, 8), torch.arange(3).repeat(10)
    held_x, held_y = torch.randn(9, 1, 8, 8), torch.arange(3).repeat(3)

    def make(seed: int) -> ConvNet:
        return seeded_convnet(seed, 1, 3, 8, 8, 2)

    def run(r: int) -> torch.Tensor:
        if indicator == "MonteCarlo":
            return scores.monte_carlo_run(x, y, held_x, held_y, make, r, 1, 7, subset_fraction=0.3, batch=10)
        estimator = scores.loss_init_run if indicator == "LossInit" else scores.loss_converge_run
        return estimator(x, y, make, r, 1, 7, batch=10)

    runs = 3  # 2 processes: rank 1 pads its second round
    one, unseen = scores.estimate(run, runs, 30, indicator)
    shares = [list(RunIds(runs, rank, 2)) for rank in range(2)]
    assert [len(s) for s in shares] == [2, 2] and sorted(int(r) for s in shares for r in s if r >= 0) == [0, 1, 2]
    total, parts = torch.zeros(2, 30, dtype=torch.float64), {}
    for round_ids in zip(*shares):  # what every process holds after the round's all_gather (runs recomputed)
        parts.update({int(r): run(int(r)) for r in round_ids if r >= 0})
        total = scores.add_in_run_order(total, [(int(r), parts[int(r)]) for r in round_ids if r >= 0])
    two, unseen_two = scores.finish(indicator, total)
    assert torch.equal(one, two) and unseen == unseen_two and torch.isfinite(one).all()
    assert not torch.equal(one, scores.finish(indicator, parts[0] + parts[1])[0])  # every run counts
