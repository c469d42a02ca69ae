"""Per-sample utility estimators (the paper releases scores, not the code that computes them); pure torch.

* LossInit: per-sample cross-entropy early in training on the full set, averaged over the first `epochs`
  epochs and over `runs` independently initialised ConvNets.
* LossConverge: per-sample cross-entropy after `epochs` of training (to convergence), averaged over runs.
* MonteCarlo: data value as the mean held-out accuracy of models trained on random subsets (fraction
  `subset_fraction`) that contain the sample, over `runs` subsets. A sample that no subset drew gets the
  mean over all subsets (counted in the result).

Low loss = easy/representative; the paper drops LARGE loss and SMALL Monte-Carlo value.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_modules.critical_distill.evaluate import accuracy, per_sample_loss, train_classifier
from lightning_modules.critical_distill.matching import generator

NetFactory = Callable[[int], nn.Module]  # seed -> fresh network


def loss_init(images: Tensor, labels: Tensor, make_net: NetFactory, runs: int, epochs: int, seed: int,
              lr: float = 0.01, batch: int = 64, run_ids: list[int] | None = None) -> Tensor:
    """Sum over the given runs of the mean per-sample loss after epochs 1..`epochs` (divide by `runs`)."""
    total = torch.zeros(len(images), dtype=torch.float64)
    for r in run_ids if run_ids is not None else range(runs):
        losses: list[Tensor] = []

        def record(epoch: int, net: nn.Module, losses: list[Tensor] = losses) -> None:
            losses.append(per_sample_loss(net, images, labels).double().cpu())

        train_classifier(make_net(seed * 1000 + r), images, labels, epochs, generator(seed, r, 1), lr=lr,
                         batch=batch, after_epoch=record)
        total += torch.stack(losses).mean(0)
    return total / runs


def loss_converge(images: Tensor, labels: Tensor, make_net: NetFactory, runs: int, epochs: int, seed: int,
                  lr: float = 0.01, batch: int = 64, run_ids: list[int] | None = None) -> Tensor:
    total = torch.zeros(len(images), dtype=torch.float64)
    for r in run_ids if run_ids is not None else range(runs):
        net = train_classifier(make_net(seed * 1000 + r), images, labels, epochs, generator(seed, r, 2), lr=lr,
                               batch=batch)
        total += per_sample_loss(net, images, labels).double().cpu()
    return total / runs


def monte_carlo(images: Tensor, labels: Tensor, held_images: Tensor, held_labels: Tensor, make_net: NetFactory,
                runs: int, epochs: int, seed: int, subset_fraction: float = 0.2, lr: float = 0.01,
                batch: int = 64, run_ids: list[int] | None = None) -> tuple[Tensor, Tensor]:
    """(sum of accuracies, count of subsets) per sample over the given runs; `monte_carlo_value` combines them."""
    n = len(images)
    acc_sum = torch.zeros(n, dtype=torch.float64)
    count = torch.zeros(n, dtype=torch.float64)
    size = max(1, round(subset_fraction * n))
    for r in run_ids if run_ids is not None else range(runs):
        g = generator(seed, r, 3)
        subset = torch.randperm(n, generator=g)[:size]
        net = train_classifier(make_net(seed * 1000 + r), images[subset], labels[subset], epochs, g, lr=lr,
                               batch=batch)
        acc_sum[subset] += accuracy(net, held_images, held_labels)
        count[subset] += 1
    return acc_sum, count


def monte_carlo_value(acc_sum: Tensor, count: Tensor) -> tuple[Tensor, int]:
    """Mean accuracy of the subsets holding each sample; unseen samples get the overall mean (and are counted)."""
    seen = count > 0
    overall = float(acc_sum[seen].sum() / count[seen].sum())
    value = torch.where(seen, acc_sum / count.clamp(min=1), torch.full_like(acc_sum, overall))
    return value, int((~seen).sum())
