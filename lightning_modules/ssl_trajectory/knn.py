"""Frozen-feature evaluation (paper §2.5): weighted kNN, per-category pose kNN with a validation-selected
setting, and a linear probe. Pure torch.

kNN weights: cosine similarity s with exp(s / T), or Euclidean distance d with 1 / (d + 1e-5) (the
released kNN). Class scores are sums of weights; the class count comes from the label table, never from
the labels present (the released kNN used `unique(test_targets)`, which breaks when a split lacks a pose).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class KnnSetting:
    k: int
    metric: str  # "cosine" | "euclidean"
    temperature: float | None = None  # cosine only

    @property
    def name(self) -> str:
        return f"k{self.k}_{self.metric}" + (f"_T{self.temperature:g}" if self.metric == "cosine" else "")


def knn_grid(ks: list[int], temperatures: list[float]) -> list[KnnSetting]:
    cosine = [KnnSetting(k, "cosine", t) for k, t in itertools.product(ks, temperatures)]
    return cosine + [KnnSetting(k, "euclidean") for k in ks]


def knn_predict(
    bank: Tensor, bank_labels: Tensor, queries: Tensor, num_classes: int, setting: KnnSetting, chunk: int = 1024
) -> Tensor:
    """Predicted labels (Q,) of `queries` (Q, D) from a labelled `bank` (N, D); k is clamped to N."""
    k = min(setting.k, bank.shape[0])
    if setting.metric == "cosine":
        bank = F.normalize(bank, dim=1)
    predictions = []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start : start + chunk]
        if setting.metric == "cosine":
            values, index = (F.normalize(q, dim=1) @ bank.T).topk(k, dim=1)
            weights = (values / setting.temperature).exp()
        else:
            values, index = torch.cdist(q, bank).topk(k, dim=1, largest=False)
            weights = 1.0 / (values + 1e-5)
        scores = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype, device=q.device)
        scores.scatter_add_(1, bank_labels[index], weights)
        predictions.append(scores.argmax(1))  # ties: the lowest class index
    return torch.cat(predictions)


def warn_if_k_too_large(ks: list[int], group_sizes: Tensor, what: str) -> None:
    """One warning line when a grid k exceeds the smallest group's bank (k is clamped there)."""
    smallest = int(group_sizes.min()) if group_sizes.numel() else 0
    if smallest and max(ks) > smallest:
        warnings.warn(
            f"kNN k={max(ks)} is larger than the smallest {what} bank ({smallest} views): k is clamped "
            f"to {smallest} there",
            stacklevel=2,
        )


def per_group_accuracy(
    bank: Tensor,
    bank_labels: Tensor,
    bank_groups: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    query_groups: Tensor,
    num_classes: int,
    setting: KnnSetting,
) -> float:
    """Accuracy of kNN run within each group (category): a query only sees bank views of its group."""
    correct, total = 0, 0
    for group in torch.unique(query_groups):
        in_bank, in_query = bank_groups == group, query_groups == group
        if not bool(in_bank.any()):
            continue
        pred = knn_predict(bank[in_bank], bank_labels[in_bank], queries[in_query], num_classes, setting)
        correct += int((pred == query_labels[in_query]).sum())
        total += int(in_query.sum())
    return correct / max(total, 1)


def select_on_val(val_accuracy: dict[KnnSetting, float]) -> KnnSetting:
    """The best validation setting; ties go to the first in grid order (deterministic)."""
    return max(val_accuracy, key=lambda s: (val_accuracy[s], -list(val_accuracy).index(s)))


def fit_linear_probe(
    train_x: Tensor, train_y: Tensor, num_classes: int, steps: int = 200, lr: float = 0.05, seed: int = 0
) -> Callable[[Tensor], Tensor]:
    """Full-batch multinomial logistic regression on standardised frozen features; returns x -> predicted labels."""
    with torch.inference_mode(False), torch.enable_grad():
        train_x = train_x.clone().float()
        mean, std = train_x.mean(0), train_x.std(0) + 1e-6
        train_x = (train_x - mean) / std
        generator = torch.Generator().manual_seed(seed)
        probe = nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
        with torch.no_grad():
            probe.weight.copy_(torch.randn(probe.weight.shape, generator=generator) * 0.01)
            probe.bias.zero_()
        optimizer = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=1e-4)
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(probe(train_x), train_y.clone()).backward()
            optimizer.step()

    def predict(x: Tensor) -> Tensor:
        with torch.no_grad():
            return probe((x.float() - mean) / std).argmax(1)

    return predict


def linear_probe_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    steps: int = 200,
    lr: float = 0.05,
    seed: int = 0,
) -> float:
    """Test top-1 of `fit_linear_probe`."""
    predict = fit_linear_probe(train_x, train_y, num_classes, steps, lr, seed)
    return float((predict(test_x) == test_y).float().mean())
