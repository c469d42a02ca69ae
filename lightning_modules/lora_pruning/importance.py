"""LoRAPrune's importance maths (digest §2.2-2.5), pure torch, one LoRA linear at a time.

A LoRA linear computes y = W0 x + s B A x with frozen W0 (d_out, d_in), A (r, d_in), B (d_out, r).
Only G_A = dL/dA and G_B = dL/dB exist; reading one SGD step on (A, B) as a step on the merged weight
W = W0 + s B A gives the LoRA-guided estimate of dL/dW (paper Eq. for grad_W):

    dL/dW ~= G_B A + B G_A - G_B G_A

Like the official code, the estimate carries no s while the weight it multiplies does (W0 + s B A).
The d_out x d_in product exists only inside `element_importance`, one layer at a time.
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor


class ImportancePower(enum.Enum):
    abs = "abs"  # |grad * W|: the official code
    square = "square"  # (grad * W)^2: the paper's first-order Taylor form


def lora_guided_gradient(lora_a: Tensor, lora_b: Tensor, grad_a: Tensor, grad_b: Tensor) -> Tensor:
    """The LoRA-guided estimate of dL/dW, (d_out, d_in), from A (r, d_in), B (d_out, r) and their grads."""
    return grad_b @ lora_a + lora_b @ grad_a - grad_b @ grad_a


def merged_weight(weight: Tensor, lora_a: Tensor, lora_b: Tensor, scale: float) -> Tensor:
    """W0 + s B A: the weight a pruned group actually removes."""
    return weight + scale * (lora_b @ lora_a)


def element_importance(grad: Tensor, weight: Tensor, power: ImportancePower) -> Tensor:
    """First-order Taylor importance of every element: the loss change if it were set to zero."""
    taylor = grad.float() * weight.float()
    return taylor.abs() if power is ImportancePower.abs else taylor.square()


def group_scores(importance: Tensor, axis: str, group_size: int, chunks: int = 1) -> Tensor:
    """Sum element importance into one score per structural group, (n_groups,).

    `axis="out"` groups rows (q/k/v/gate/up: a head's rows or a channel's row), `axis="in"` groups
    columns (o/down). `chunks` > 1 is a fused projection (timm's qkv: [q; k; v] stacked), where a
    head owns `group_size` rows in each of the `chunks` blocks.
    """
    per_line = importance.sum(dim=1) if axis == "out" else importance.sum(dim=0)
    return per_line.view(chunks, -1, group_size).sum(dim=(0, 2))


def normalized(scores: Tensor, eps: float = 1e-12) -> Tensor:
    """Scores divided by their L2 norm, so every matrix of a block weighs the same (and AMP loss
    scaling cancels) when their group vectors are added (official code)."""
    return scores / scores.norm().clamp_min(eps)


def ema_update(average: Tensor, scores: Tensor, decay: float) -> Tensor:
    """G_bar_t = decay * G_bar_(t-1) + (1 - decay) * G_hat_t (digest §2.5), starting from zeros."""
    return decay * average + (1.0 - decay) * scores


def has_nan(scores: Tensor) -> bool:
    """fp16 overflow shows up as NaN scores; the official code skips that step's update."""
    return bool(torch.isnan(scores).any())
