"""Binary group masks on a LoRA model (digest §2.6).

Every "out" member (q/k/v/gate/up, timm's qkv/fc1) carries a `loraprune_mask` buffer of length
d_out and a forward hook multiplying its output by it; that output is (W0 + s B A) x + b, so the mask
removes the rows of the frozen weight, of LoRA's B and of the bias at once, and no later LoRA update can
bring a pruned row back. "in" members (o/down/proj/fc2) need no mask: their pruned inputs are zero.
When a mask changes, the pruned rows and columns are also zeroed in W0, B, A and the bias, so the merged
weights of the masked model are exactly those the sliced model keeps. The buffers live in the model's
state dict, so checkpoints carry the masks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_modules.lora_pruning.groups import PrunableBlock
from lightning_modules.lora_pruning.lora_layers import linear_parts
from lightning_modules.lora_pruning.schedule import groups_to_prune

MASK_BUFFER = "loraprune_mask"


def _mask_output(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    return output * getattr(module, MASK_BUFFER).to(output.dtype)


def attach_masks(model: nn.Module, blocks: list[PrunableBlock]) -> None:
    """All-ones masks and their hooks on every out member (call once, before DDP wraps the model)."""
    for block in blocks:
        for member in block.members:
            if member.axis != "out":
                continue
            module = model.get_submodule(member.path)
            rows = linear_parts(module).weight.shape[0]
            module.register_buffer(MASK_BUFFER, torch.ones(rows))
            module.register_forward_hook(_mask_output)


def group_keep(model: nn.Module, block: PrunableBlock) -> Tensor:
    """Per-group keep flags (n_groups,) bool, read from the block's first out member."""
    member = next(m for m in block.members if m.axis == "out")
    mask = getattr(model.get_submodule(member.path), MASK_BUFFER)
    return mask.view(member.chunks, block.n_groups, member.group_size)[0, :, 0] > 0


@torch.no_grad()
def set_group_keep(model: nn.Module, block: PrunableBlock, keep: Tensor) -> None:
    """Write `keep` (n_groups,) into the block's masks and zero the pruned lines of every member."""
    for member in block.members:
        module = model.get_submodule(member.path)
        lines = block.lines(keep.to(torch.bool), member)
        parts = linear_parts(module)
        if member.axis == "out":
            getattr(module, MASK_BUFFER).copy_(lines.float())
            for tensor in (parts.weight, parts.bias, parts.lora_b):
                if tensor is not None:
                    tensor[~lines.to(tensor.device)] = 0
        else:
            for tensor in (parts.weight, parts.lora_a):
                if tensor is not None:
                    tensor[:, ~lines.to(tensor.device)] = 0


def sparsity_by_block(model: nn.Module, blocks: list[PrunableBlock]) -> dict[str, float]:
    """Fraction of pruned groups per block, for logging."""
    return {block.name: 1.0 - group_keep(model, block).float().mean().item() for block in blocks}


def at_final_sparsity(model: nn.Module, blocks: list[PrunableBlock], final: float) -> bool:
    """Whether every block has pruned as many groups as the final sparsity asks for."""
    return all(int((~group_keep(model, b)).sum()) >= groups_to_prune(b.n_groups, final) for b in blocks)
