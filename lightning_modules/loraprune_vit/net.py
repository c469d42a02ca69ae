"""LoRAPrune on a timm VisionTransformer: the per-layer-shaped ViT a pruned model becomes.

timm's `Attention` reads its head count from `num_heads`/`attn_dim` (not from `dim`), so removing heads
is slicing the fused qkv rows and proj columns and updating those two attributes; the MLP follows its
linears' shapes. `build_pruned_vit` rebuilds such a model for the export.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from lightning_modules.lora_pruning.groups import PrunableBlock


def build_vit(name: str, num_classes: int, arch: dict[str, Any], pretrained_file: str | None = None) -> nn.Module:
    """A timm ViT; `pretrained_file` is a local checkpoint (nothing is downloaded)."""
    return timm.create_model(name, pretrained=pretrained_file is not None, num_classes=num_classes,
                             pretrained_cfg_overlay={"file": pretrained_file} if pretrained_file else None, **arch)


def vit_layer_shapes(model: nn.Module, blocks: list[PrunableBlock], keeps: dict[str, torch.Tensor]) -> list[dict]:
    shapes = [{"heads": b.attn.num_heads, "mlp_hidden": b.mlp.fc1.out_features} for b in model.blocks]
    for block in blocks:
        shapes[block.layer]["heads" if block.kind == "heads" else "mlp_hidden"] = int(keeps[block.name].sum())
    return shapes


def set_vit_head_counts(model: nn.Module, shapes: list[dict]) -> None:
    """After slicing: each attention's `num_heads`/`attn_dim` from its layer's kept heads."""
    for block, shape in zip(model.blocks, shapes, strict=True):
        block.attn.num_heads = shape["heads"]
        block.attn.attn_dim = shape["heads"] * block.attn.head_dim


def uniform_timm_kwargs(model: nn.Module, layer_shapes: list[dict]) -> dict[str, Any] | None:
    """The `timm.create_model` arguments of a pruned ViT whose blocks all have one shape, else None.

    Pruning keeps the head width, so the attention needs `attn_head_dim` (an `Attention` argument that
    VisionTransformer does not forward: pass an `Attention` subclass that sets it as `attn_layer`)."""
    if len({(s["heads"], s["mlp_hidden"]) for s in layer_shapes}) != 1:
        return None
    heads, hidden = layer_shapes[0]["heads"], layer_shapes[0]["mlp_hidden"]
    dim = model.blocks[0].attn.qkv.in_features
    mlp_ratio = hidden / dim
    if int(dim * mlp_ratio) != hidden:  # timm builds int(dim * mlp_ratio) channels
        return None
    return {"num_heads": heads, "mlp_ratio": mlp_ratio, "attn_head_dim": model.blocks[0].attn.head_dim}


def build_pruned_vit(name: str, num_classes: int, arch: dict[str, Any], layer_shapes: list[dict]) -> nn.Module:
    """Builder named in export_meta.yaml: the ViT with every layer resized to `layer_shapes`."""
    model = build_vit(name, num_classes, arch)
    for block, shape in zip(model.blocks, layer_shapes, strict=True):
        attn, mlp = block.attn, block.mlp
        dim, attn_dim, hidden = attn.qkv.in_features, shape["heads"] * attn.head_dim, shape["mlp_hidden"]
        attn.qkv = nn.Linear(dim, 3 * attn_dim, bias=attn.qkv.bias is not None)
        attn.proj = nn.Linear(attn_dim, dim, bias=attn.proj.bias is not None)
        mlp.fc1 = nn.Linear(dim, hidden, bias=mlp.fc1.bias is not None)
        mlp.fc2 = nn.Linear(hidden, dim, bias=mlp.fc2.bias is not None)
    set_vit_head_counts(model, layer_shapes)
    return model
