"""Dense warm-up of a model built from scratch, before LoRAPrune starts (demo models only)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def dense_warmup(model: nn.Module, batches: Any, steps: int, lr: float,
                 loss_fn: Callable[[nn.Module, Any], torch.Tensor]) -> list[float]:
    """Plain AdamW training of every non-LoRA weight for `steps` batches (demo models built from scratch).

    LoRA's B starts at zero, so the LoRA path is an exact no-op here; its parameters are left untouched
    and requires_grad is restored afterwards. Returns the per-step losses.
    """
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    dense = [p for name, p in model.named_parameters() if "lora_" not in name]
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" not in name)
    optimizer = torch.optim.AdamW(dense, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    losses = []
    model.train()
    for batch in itertools.islice(itertools.cycle(batches), steps):
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    for name, p in model.named_parameters():
        p.requires_grad_(trainable[name])
    return losses
