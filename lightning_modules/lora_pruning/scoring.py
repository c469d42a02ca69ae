"""Group scores of one block from the gradients of the current optimizer step.

Criteria (digest §2.7): `lora` (the paper: LoRA-guided gradient estimate), `grad` (true dL/dW0, which
needs W0.requires_grad and a full-size gradient buffer: the memory LoRAPrune saves), `magnitude`
(gradient factor replaced by 1) and `random` (a baseline that ignores the model).
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor, nn

from lightning_modules.lora_pruning.groups import PrunableBlock
from lightning_modules.lora_pruning.importance import (
    ImportancePower,
    element_importance,
    group_scores,
    lora_guided_gradient,
    merged_weight,
    normalized,
)
from lightning_modules.lora_pruning.lora_layers import linear_parts


class Criterion(enum.Enum):
    lora = "lora"
    grad = "grad"
    magnitude = "magnitude"
    random = "random"


def gradient_estimate(module: nn.Module, criterion: Criterion) -> Tensor | None:
    """dL/dW of the merged weight as the criterion sees it; None when the step left no gradient."""
    parts = linear_parts(module)
    if criterion is Criterion.grad:
        return parts.weight.grad
    if criterion is Criterion.magnitude:
        return torch.ones_like(parts.weight)
    if parts.lora_a is None or parts.lora_a.grad is None or parts.lora_b.grad is None:
        return None
    return lora_guided_gradient(parts.lora_a, parts.lora_b, parts.lora_a.grad, parts.lora_b.grad)


@torch.no_grad()
def block_scores(model: nn.Module, block: PrunableBlock, criterion: Criterion, power: ImportancePower) -> Tensor | None:
    """Sum over the block's matrices of their L2-normalised group scores, (n_groups,) float32."""
    total = None
    for member in block.members:
        module = model.get_submodule(member.path)
        grad = gradient_estimate(module, criterion)
        if grad is None:
            return None
        parts = linear_parts(module)
        weight = parts.weight if parts.lora_a is None else merged_weight(
            parts.weight, parts.lora_a, parts.lora_b, parts.scale)
        scores = normalized(group_scores(element_importance(grad, weight, power), member.axis, member.group_size,
                                         member.chunks))
        total = scores if total is None else total + scores
    return total
