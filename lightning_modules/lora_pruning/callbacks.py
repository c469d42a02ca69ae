"""LoRAPrune's iterative pruning as a Lightning callback (digest §2.5-2.8, "callback mapping").

Once per optimizer step, after gradient accumulation and before the optimizer applies the update, the
callback scores every prunable block from the step's gradients, folds the scores into an exponential
moving average, and on a pruning step masks the lowest-scoring groups so that each pruned layer reaches
the cubic schedule's target. Decisions are the same on every DDP rank: LoRA gradients are already
averaged by DDP, and the scores are averaged once more across ranks before use (a few KB). Masks are
buffers of the model (in the checkpoint's state dict); the moving averages and the step are the
callback's state, so a resumed run continues the schedule where it stopped.

The module provides `prunable_model()` (the base model whose submodule paths the blocks name),
`blocks` (its list of `PrunableBlock`) and `curve_metric` (the validation metric the dashboard plots
against sparsity, `panels.py`: one point per validation, logged at the end of training).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_modules.lora_pruning.config import PruneConfig
from lightning_modules.lora_pruning.importance import ema_update, has_nan
from lightning_modules.lora_pruning.lora_layers import linear_parts
from lightning_modules.lora_pruning.masks import group_keep, set_group_keep, sparsity_by_block
from lightning_modules.lora_pruning.panels import log_pruning_curve
from lightning_modules.lora_pruning.schedule import cubic_sparsity, groups_to_prune, is_pruning_step
from lightning_modules.lora_pruning.scoring import Criterion, block_scores


def prune_lowest(scores: Tensor, keep: Tensor, n_prune: int) -> Tensor:
    """Keep flags with the `n_prune` lowest-scoring groups pruned; pruned groups stay pruned."""
    ranked = scores.float().masked_fill(~keep, float("-inf"))
    order = torch.argsort(ranked, stable=True)
    new_keep = torch.ones_like(keep)
    new_keep[order[:n_prune]] = False
    return new_keep


class LoRAPruneCallback(L.Callback):
    def __init__(self, cfg: PruneConfig) -> None:
        self.cfg = cfg
        self.ema: dict[str, Tensor] = {}
        self.step = 0  # optimizer steps seen
        self.rounds = 0  # pruning steps done
        self.curve: list[list[float]] = []  # (step, rounds, mean sparsity, validation metric) per validation

    # ---- the schedule

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        self.step = trainer.global_step + 1  # the step this update completes
        model, blocks = pl_module.prunable_model(), pl_module.blocks
        if not blocks:
            return
        scores = self._step_scores(trainer, model, blocks)
        if scores is not None:
            for block, block_score in zip(blocks, scores):
                previous = self.ema.get(block.name, torch.zeros_like(block_score))
                self.ema[block.name] = ema_update(previous, block_score, self.cfg.ema_decay)
        self._release_weight_grads(model, blocks)
        total = max(1, self.cfg.total_steps or int(trainer.estimated_stepping_batches))
        target = cubic_sparsity(self.step, total, self.cfg.final_sparsity, self.cfg.initial_sparsity,
                                self.cfg.warmup, self.cfg.cooldown)
        if target > self.cfg.initial_sparsity and is_pruning_step(self.step, total, self.cfg.every_n_steps,
                                                                  self.cfg.cooldown):
            self._prune(model, blocks, target)
            self.rounds += 1
            sparsity = sparsity_by_block(model, blocks)
            pl_module.log_dict({f"prune/sparsity/{name}": value for name, value in sparsity.items()},
                               on_step=True, on_epoch=False)
        pl_module.log("prune/target", target, on_step=True, on_epoch=False)

    def _step_scores(self, trainer: L.Trainer, model: torch.nn.Module, blocks: list) -> list[Tensor] | None:
        if self.cfg.criterion is Criterion.random:
            generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
            return [torch.rand(block.n_groups, generator=generator) for block in blocks]
        scores = [block_scores(model, block, self.cfg.criterion, self.cfg.power) for block in blocks]
        if any(s is None for s in scores):
            return None  # a step without LoRA gradients (e.g. everything masked upstream)
        flat = torch.cat(scores)
        if trainer.world_size > 1:
            flat = trainer.strategy.reduce(flat, reduce_op="mean")
        if has_nan(flat):
            return None  # fp16 overflow: the official code skips the update
        return list(flat.float().cpu().split([block.n_groups for block in blocks]))

    def _prune(self, model: torch.nn.Module, blocks: list, target: float) -> None:
        for block in blocks:
            keep = group_keep(model, block).cpu()
            n_prune = groups_to_prune(block.n_groups, target)
            if n_prune <= int((~keep).sum()):
                continue
            scores = self.ema.get(block.name, torch.zeros(block.n_groups))
            set_group_keep(model, block, prune_lowest(scores, keep, n_prune))

    def _release_weight_grads(self, model: torch.nn.Module, blocks: list) -> None:
        """The `grad` criterion's full W0 gradients are read once per step; the optimizer does not own
        them, so drop them here instead of letting them accumulate."""
        if self.cfg.criterion is not Criterion.grad:
            return
        for block in blocks:
            for member in block.members:
                linear_parts(model.get_submodule(member.path)).weight.grad = None

    # ---- the dashboard panel: sparsity vs the validation metric

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(pl_module.curve_metric)
        if trainer.sanity_checking or not pl_module.blocks or value is None:
            return
        sparsity = sparsity_by_block(pl_module.prunable_model(), pl_module.blocks)
        mean = sum(sparsity.values()) / len(sparsity)
        self.curve.append([trainer.global_step, self.rounds, round(mean, 6), float(value)])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            log_pruning_curve(trainer.loggers, self.curve, pl_module.curve_metric, trainer.global_step)

    # ---- checkpointing

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "ema": {name: value.clone() for name, value in self.ema.items()},
                "rounds": self.rounds, "curve": [list(row) for row in self.curve]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step = int(state_dict["step"])
        self.ema = {name: value.clone() for name, value in state_dict["ema"].items()}
        self.rounds = int(state_dict.get("rounds", 0))
        self.curve = [list(row) for row in state_dict.get("curve", [])]
