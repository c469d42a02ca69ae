"""The relative-pose probe (paper §2.5, item 3): from the frozen features of two views of the same object,
classify the relative camera pose between them into one of 50 bins.

    pairs (i, j):  two different views of one object instance, drawn uniformly (seeded)
    label:         the nearest of Fib(50) to view j's camera position in view i's camera frame
                   (`poses.relative_pose_bins`; the release's precomputed table is not shipped)
    probe:         a linear classifier on the concatenated pair features [f_i, f_j], trained on pairs of
                   the train instances (the kNN bank), scored on pairs of other instances

Relative pose needs no canonical pose per category, so it is also scored on the held-out categories.
The paper's probe is LARS (lr 1.0, 400 epochs, batch 256); here the same full-batch logistic regression
as the semantic probe (`knn.fit_linear_probe`, `eval.probe_steps`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lightning_modules.ssl_trajectory.knn import fit_linear_probe
from lightning_modules.ssl_trajectory.poses import relative_pose_bins


def sample_pairs(groups: Tensor, n_pairs: int, seed: int) -> tuple[Tensor, Tensor]:
    """`n_pairs` index pairs (i, j), i != j, both in one group (object instance); groups drawn uniformly.

    Groups with a single view are skipped; (empty, empty) when no group has two views.
    """
    values, inverse, counts = torch.unique(groups.cpu(), return_inverse=True, return_counts=True)
    usable = (counts >= 2).nonzero().flatten()
    if not len(usable):
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    members = [(inverse == g).nonzero().flatten() for g in usable.tolist()]
    generator = torch.Generator().manual_seed(seed)
    which = torch.randint(len(members), (n_pairs,), generator=generator)
    first, second = torch.empty(n_pairs, dtype=torch.long), torch.empty(n_pairs, dtype=torch.long)
    for g, views in enumerate(members):
        rows = (which == g).nonzero().flatten()
        n = len(views)
        i = torch.randint(n, (len(rows),), generator=generator)
        j = (i + torch.randint(1, n, (len(rows),), generator=generator)) % n  # never i itself
        first[rows], second[rows] = views[i], views[j]
    return first, second


def pair_features(features: Tensor, first: Tensor, second: Tensor) -> Tensor:
    """(P, 2D): [f_i, f_j] per pair."""
    first, second = first.to(features.device), second.to(features.device)
    return torch.cat([features[first], features[second]], dim=1)


def pair_labels(directions: Tensor, first: Tensor, second: Tensor, n_bins: int) -> Tensor:
    """(P,) relative-pose bins from the views' unit view vectors (N, 3)."""
    d = directions.detach().cpu().double().numpy()
    bins = relative_pose_bins(d[first.numpy()], d[second.numpy()], n_bins)
    return torch.from_numpy(bins.astype(np.int64)).to(directions.device)


def relative_pose_accuracy(
    train: tuple[Tensor, Tensor, Tensor],
    tests: dict[str, tuple[Tensor, Tensor, Tensor]],
    n_pairs: int,
    n_bins: int = 50,
    steps: int = 200,
    seed: int = 0,
) -> tuple[dict[str, float], dict[str, float]]:
    """Probe accuracy on each test set, and each set's majority-bin rate (the chance level to read it against).

    `train` and each test are (features (N, D), view vectors (N, 3), instance ids (N,)); pairs are drawn
    within instances, a different seed per set.
    """
    features, directions, groups = train
    first, second = sample_pairs(groups, n_pairs, seed)
    predict = fit_linear_probe(
        pair_features(features, first, second),
        pair_labels(directions, first, second, n_bins),
        n_bins,
        steps=steps,
        seed=seed,
    )
    accuracy, majority = {}, {}
    for offset, (name, (x, d, g)) in enumerate(tests.items(), start=1):
        first, second = sample_pairs(g, n_pairs, seed + offset)
        if not len(first):
            continue
        labels = pair_labels(d, first, second, n_bins)
        accuracy[name] = float((predict(pair_features(x, first, second)) == labels).float().mean())
        majority[name] = float(torch.bincount(labels.cpu(), minlength=n_bins).max()) / len(labels)
    return accuracy, majority
