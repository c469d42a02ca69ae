"""From masks to a smaller dense model: merge LoRA into W0, then physically drop pruned rows/columns.

This is the step the official code leaves to `inference.py` (its issue #1); here it is the export,
checked against the masked model (`tests/test_loraprune_slicing.py`).
"""

from __future__ import annotations

import copy

import torch
from peft import PeftModel
from torch import Tensor, nn

from lightning_modules.lora_pruning.groups import PrunableBlock
from lightning_modules.lora_pruning.masks import group_keep


def block_keeps(model: nn.Module, blocks: list[PrunableBlock]) -> dict[str, Tensor]:
    """Per-block keep flags, read from the masks (before merging removes the masked modules)."""
    return {block.name: group_keep(model, block).cpu() for block in blocks}


def merged_copy(model: PeftModel) -> nn.Module:
    """A copy of the base model with W0 <- W0 + s B A in every LoRA linear (the model is untouched)."""
    return copy.deepcopy(model).merge_and_unload()


@torch.no_grad()
def slice_linear(linear: nn.Linear, lines: Tensor, axis: str) -> nn.Linear:
    """A new linear holding only the kept rows (`axis="out"`) or columns (`"in"`) of `linear`."""
    index = lines.nonzero().flatten().to(linear.weight.device)
    weight = linear.weight.index_select(0 if axis == "out" else 1, index)
    bias = linear.bias
    if bias is not None and axis == "out":
        bias = bias.index_select(0, index)
    sliced = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                       dtype=weight.dtype)
    sliced.weight.copy_(weight)
    if bias is not None:
        sliced.bias.copy_(bias)
    return sliced


def slice_blocks(model: nn.Module, blocks: list[PrunableBlock], keeps: dict[str, Tensor]) -> None:
    """In place: replace every member linear of every block by its sliced version."""
    for block in blocks:
        keep = keeps[block.name].to(torch.bool)
        for member in block.members:
            parent_path, _, name = member.path.rpartition(".")
            parent = model.get_submodule(parent_path)
            setattr(parent, name, slice_linear(getattr(parent, name), block.lines(keep, member), member.axis))
