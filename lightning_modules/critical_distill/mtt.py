"""Matching Training Trajectories (MTT, Cazenavette et al. 2022) with the subset guard of the pruning paper.

Experts: ConvNets trained on the KEPT real subset with plain SGD (no momentum, constant lr, no weight decay,
DSA on each batch), parameters saved after every epoch. Distillation: from expert checkpoint theta*_t, take
`syn_steps` student steps on synthetic batches with the learnable step size alpha (students are
`torch.func.functional_call` on a flat parameter vector, not a re-parameterised module), and minimise
||theta_hat - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2.

The buffer file stores the hash of the subset it was trained on; using it with another subset is refused (the
README of the pruning paper warns that experts and distillation must see the same subset).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lightning_modules.critical_distill.augment import dsa
from lightning_modules.critical_distill.evaluate import train_classifier
from tenfold.errors import DataError

BUFFER_FORMAT = "tenfold.critical_distill.mtt_buffer/1"


def flat_params(net: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def unflatten(net: nn.Module, flat: Tensor) -> dict[str, Tensor]:
    out, offset = {}, 0
    for name, p in net.named_parameters():
        out[name] = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return out


def train_expert(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    epochs: int,
    lr: float,
    batch: int,
    dsa_strategy: str | None,
    g: torch.Generator,
) -> Tensor:
    """One expert trajectory: (epochs + 1, P) flat parameters, the start and after each epoch."""
    trajectory = [flat_params(net).cpu()]
    train_classifier(
        net,
        images,
        labels,
        epochs,
        g,
        lr=lr,
        momentum=0.0,
        batch=batch,
        dsa_strategy=dsa_strategy,
        after_epoch=lambda ep, n: trajectory.append(flat_params(n).cpu()),
    )
    return torch.stack(trajectory)


def save_buffer(path: str | Path, trajectories: Tensor, meta: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": BUFFER_FORMAT, "trajectories": trajectories, "meta": meta}, tmp)
    tmp.replace(path)
    return path


def load_buffer(path: str | Path, subset_hash: str, num_params: int) -> Tensor:
    """(experts, epochs + 1, P) trajectories, refused unless trained on this very subset with this network."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"model.mtt.buffer={path}: no such file; leave it null to train the experts in this run")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != BUFFER_FORMAT:
        raise DataError(f"model.mtt.buffer={path}: not an MTT expert buffer written by critical_distill")
    meta, trajectories = blob["meta"], blob["trajectories"]
    if meta.get("subset_hash") != subset_hash:
        raise DataError(
            f"model.mtt.buffer={path} was trained on another real subset (hash {meta.get('subset_hash')}, "
            f"this selection {subset_hash}): experts and distillation must use the same kept subset; "
            "retrain the experts (model.mtt.buffer=null)"
        )
    if trajectories.shape[-1] != num_params:
        raise DataError(
            f"model.mtt.buffer={path}: experts have {trajectories.shape[-1]} parameters, this network "
            f"{num_params}: use the same model.net_width / net_depth"
        )
    return trajectories


def trajectory_loss(
    net: nn.Module,
    start: Tensor,
    target: Tensor,
    images: Tensor,
    labels: Tensor,
    syn_lr: Tensor,
    syn_steps: int,
    batch_syn: int,
    dsa_strategy: str | None,
    g: torch.Generator,
) -> Tensor:
    """N student steps from `start` on the synthetic set, then the normalised distance to `target`."""
    params = start.clone().requires_grad_(True)
    chunks: list[Tensor] = []
    for _ in range(syn_steps):
        if not chunks:
            chunks = list(torch.randperm(len(images), generator=g).split(batch_syn))
        idx = chunks.pop().to(images.device)
        x = images[idx]
        if dsa_strategy:
            x = dsa(x, dsa_strategy, g)
        ce = F.cross_entropy(functional_call(net, unflatten(net, params), (x,)), labels[idx])
        (grad,) = torch.autograd.grad(ce, params, create_graph=True)
        params = params - syn_lr * grad
    return ((params - target) ** 2).sum() / ((start - target) ** 2).sum()
