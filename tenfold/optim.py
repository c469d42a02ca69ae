"""Optimizer and LR schedule from `OptimConfig`, through timm's factories.

The schedule is stepped per optimizer update (timm's `step_update`), so warm-up and cosine decay are
smooth within an epoch and resume exactly from the scheduler state Lightning checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn
from torch.optim import Optimizer

from tenfold.config import LRScaling, OptimConfig


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """`cfg.lr` is given at `cfg.reference_batch_size`; rescale it for the actual global batch."""
    ratio = global_batch / cfg.reference_batch_size
    if cfg.lr_scaling is LRScaling.linear:
        return cfg.lr * ratio
    if cfg.lr_scaling is LRScaling.sqrt:
        return cfg.lr * math.sqrt(ratio)
    return cfg.lr


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> Optimizer:
    from timm.optim import create_optimizer_v2  # imported here: seconds of start-up that inference never needs

    extra: dict[str, Any] = {}
    if "adam" in cfg.name or "lamb" in cfg.name:
        extra = {"betas": tuple(cfg.betas), "eps": cfg.eps}
    return create_optimizer_v2(
        model,
        opt=cfg.name,
        lr=lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        filter_bias_and_bn=cfg.no_weight_decay_1d,
        **extra,
    )


def build_scheduler(optimizer: Optimizer, cfg: OptimConfig, total_updates: int, updates_per_epoch: int) -> Any | None:
    """A timm scheduler over `total_updates` optimizer steps; epochs in the config are converted."""
    from timm.scheduler import create_scheduler_v2  # see build_optimizer

    if cfg.scheduler == "none":
        return None
    updates_per_epoch = max(1, updates_per_epoch)
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.scheduler,
        num_epochs=max(1, math.ceil(total_updates / updates_per_epoch)),
        decay_milestones=list(cfg.decay_milestones),
        decay_rate=cfg.decay_rate,
        min_lr=cfg.min_lr,
        warmup_lr=cfg.warmup_lr,
        warmup_epochs=cfg.warmup_epochs,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    return scheduler


def optimizers_with_schedule(optimizer: Optimizer, cfg: OptimConfig, total_updates: int, updates_per_epoch: int) -> Any:
    """What `configure_optimizers` returns: the optimizer, with its timm scheduler (if any) stepped per update."""
    scheduler = build_scheduler(optimizer, cfg, total_updates, updates_per_epoch)
    if scheduler is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
