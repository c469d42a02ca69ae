"""The evaluation protocol (DatasetCondensation `evaluate_synset`) and plain classifier training; pure torch.

A fresh ConvNet is trained on the synthetic set only: SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch
256, `epochs + 1` epochs with the lr divided by 10 (and the optimizer rebuilt, as the official code does) after
epoch `epochs // 2 + 1`; DSA augmentation on every batch when the distillation used DSA. Its test accuracy is
one evaluation; the paper reports mean +- std over many such networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.critical_distill.augment import dsa


def _batches(n: int, batch: int, g: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=g).split(batch))


def _train_epoch(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    labels: Tensor,
    batch: int,
    g: torch.Generator,
    dsa_strategy: str | None,
) -> None:
    """One shuffled pass of cross-entropy SGD steps, DSA-augmenting each batch when asked."""
    for idx in _batches(len(images), batch, g):
        x = images[idx.to(images.device)]
        if dsa_strategy:
            x = dsa(x, dsa_strategy, g)
        loss = F.cross_entropy(net(x), labels[idx.to(labels.device)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def train_on_synthetic(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    g: torch.Generator,
    lr: float = 0.01,
    batch: int = 256,
    dsa_strategy: str | None = None,
) -> nn.Module:
    images, labels = images.detach(), labels.detach()
    decay_at = epochs // 2 + 1

    def sgd(rate: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=0.9, weight_decay=5e-4)

    optimizer = sgd(lr)
    net.train()
    for ep in range(epochs + 1):
        _train_epoch(net, optimizer, images, labels, batch, g, dsa_strategy)
        if ep == decay_at:
            lr *= 0.1
            optimizer = sgd(lr)
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, images: Tensor, labels: Tensor, batch: int = 512) -> float:
    net.eval()
    correct = sum(
        int((net(images[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum())
        for i in range(0, len(images), batch)
    )
    return correct / len(images)


def train_classifier(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    g: torch.Generator,
    lr: float = 0.01,
    momentum: float = 0.9,
    batch: int = 64,
    dsa_strategy: str | None = None,
    after_epoch=None,
) -> nn.Module:
    """Plain SGD training on real data (utility scores, MTT experts); `after_epoch(epoch, net)` after each epoch."""
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    for ep in range(epochs):
        net.train()
        _train_epoch(net, optimizer, images, labels, batch, g, dsa_strategy)
        if after_epoch is not None:
            after_epoch(ep + 1, net)
    return net.eval()


@torch.no_grad()
def per_sample_loss(net: nn.Module, images: Tensor, labels: Tensor, batch: int = 512) -> Tensor:
    net.eval()
    return torch.cat(
        [
            F.cross_entropy(net(images[i : i + batch]), labels[i : i + batch], reduction="none")
            for i in range(0, len(images), batch)
        ]
    )
