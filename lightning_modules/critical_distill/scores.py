"""Per-sample utility estimators (the paper releases scores, not the code that computes them); pure torch.

* LossInit: per-sample cross-entropy early in training on the full set, averaged over the first `epochs`
  epochs and over `runs` independently initialised ConvNets.
* LossConverge: per-sample cross-entropy after `epochs` of training (to convergence), averaged over runs.
* MonteCarlo: data value as the mean held-out accuracy of models trained on random subsets (fraction
  `subset_fraction`) that contain the sample, over `runs` subsets. A sample that no subset drew gets the
  mean over all subsets (counted in the result).

Low loss = easy/representative; the paper drops LARGE loss and SMALL Monte-Carlo value.

Each run is a function of (seed, run id) only: its network is `make_net(seed * 1000 + run)` and its batches
(and MonteCarlo subset) come from `generator(seed, run, tag)`. A run returns its contribution, a (2, n)
float64 tensor (the loss and 1, or the held-out accuracy on its subset and the subset's indicator); the
estimate adds the contributions IN RUN ORDER (`add_in_run_order`), so runs computed by different processes
and gathered give the bit-identical sum of one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from lightning_modules.critical_distill.evaluate import accuracy, per_sample_loss, train_classifier
from lightning_modules.critical_distill.matching import generator

NetFactory = Callable[[int], nn.Module]  # seed -> fresh network
RunFunction = Callable[[int], Tensor]  # run id -> (2, n) float64 contribution
TAGS = {"LossInit": 1, "LossConverge": 2, "MonteCarlo": 3}


def loss_init_run(
    images: Tensor,
    labels: Tensor,
    make_net: NetFactory,
    run: int,
    epochs: int,
    seed: int,
    lr: float = 0.01,
    batch: int = 64,
) -> Tensor:
    """One run's mean per-sample loss after epochs 1..`epochs`."""
    losses: list[Tensor] = []

    def record(epoch: int, net: nn.Module) -> None:
        losses.append(per_sample_loss(net, images, labels).double().cpu())

    train_classifier(
        make_net(seed * 1000 + run),
        images,
        labels,
        epochs,
        generator(seed, run, TAGS["LossInit"]),
        lr=lr,
        batch=batch,
        after_epoch=record,
    )
    mean = torch.stack(losses).mean(0)
    return torch.stack([mean, torch.ones_like(mean)])


def loss_converge_run(
    images: Tensor,
    labels: Tensor,
    make_net: NetFactory,
    run: int,
    epochs: int,
    seed: int,
    lr: float = 0.01,
    batch: int = 64,
) -> Tensor:
    """One run's per-sample loss after `epochs` of training."""
    net = train_classifier(
        make_net(seed * 1000 + run),
        images,
        labels,
        epochs,
        generator(seed, run, TAGS["LossConverge"]),
        lr=lr,
        batch=batch,
    )
    loss = per_sample_loss(net, images, labels).double().cpu()
    return torch.stack([loss, torch.ones_like(loss)])


def monte_carlo_run(
    images: Tensor,
    labels: Tensor,
    held_images: Tensor,
    held_labels: Tensor,
    make_net: NetFactory,
    run: int,
    epochs: int,
    seed: int,
    subset_fraction: float = 0.2,
    lr: float = 0.01,
    batch: int = 64,
) -> Tensor:
    """One random subset: (held-out accuracy on the subset's samples, 1 on the subset's samples)."""
    n = len(images)
    g = generator(seed, run, TAGS["MonteCarlo"])
    subset = torch.randperm(n, generator=g)[: max(1, round(subset_fraction * n))]
    net = train_classifier(make_net(seed * 1000 + run), images[subset], labels[subset], epochs, g, lr=lr, batch=batch)
    out = torch.zeros(2, n, dtype=torch.float64)
    out[0, subset] = accuracy(net, held_images, held_labels)
    out[1, subset] = 1.0
    return out


def add_in_run_order(total: Tensor, contributions: Iterable[tuple[int, Tensor]]) -> Tensor:
    """`total` plus the contributions of the given (run id, contribution) pairs, in increasing run id."""
    for _, part in sorted(contributions, key=lambda pair: pair[0]):
        total = total + part
    return total


def finish(indicator: str, total: Tensor) -> tuple[Tensor, int]:
    """The summed contributions of all runs -> (one score per sample, samples no run saw)."""
    if indicator == "MonteCarlo":
        return monte_carlo_value(total[0], total[1])
    return total[0] / total[1], 0  # total[1] is the number of runs for every sample


def monte_carlo_value(acc_sum: Tensor, count: Tensor) -> tuple[Tensor, int]:
    """Mean accuracy of the subsets holding each sample; unseen samples get the overall mean (and are counted)."""
    seen = count > 0
    overall = float(acc_sum[seen].sum() / count[seen].sum())
    value = torch.where(seen, acc_sum / count.clamp(min=1), torch.full_like(acc_sum, overall))
    return value, int((~seen).sum())


def estimate(run: RunFunction, runs: int, n: int, indicator: str) -> tuple[Tensor, int]:
    """All runs in one process: (scores, unseen samples)."""
    total = add_in_run_order(torch.zeros(2, n, dtype=torch.float64), ((r, run(r)) for r in range(runs)))
    return finish(indicator, total)


def loss_init(
    images: Tensor,
    labels: Tensor,
    make_net: NetFactory,
    runs: int,
    epochs: int,
    seed: int,
    lr: float = 0.01,
    batch: int = 64,
) -> Tensor:
    """LossInit over `runs` runs in one process (the benchmarks' and tests' entry point)."""
    return estimate(
        lambda r: loss_init_run(images, labels, make_net, r, epochs, seed, lr, batch), runs, len(images), "LossInit"
    )[0]
