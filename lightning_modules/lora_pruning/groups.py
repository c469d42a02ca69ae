"""Dependency-aware pruning groups (digest §2.4): what must be removed together, per block.

A block is one layer's attention or FFN. Its groups are
- attention: one group per key/value head. With grouped-query attention a KV head is shared by
  `n_rep` consecutive query heads, so its group is those q rows, its k and v rows, and the matching o
  columns (removing query heads alone would break the fixed query/KV ratio LLaMA's code assumes; the
  official code's 32-heads assumption is exactly what breaks on Llama-3, its issue #6);
- FFN: one group per intermediate channel: that row of gate and up (or fc1), that column of down (fc2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tenfold.errors import ConfigError


@dataclass(frozen=True)
class Member:
    """One matrix of a group: `axis="out"` owns rows (masked at its output), `"in"` owns columns."""

    path: str  # module path inside the base model, e.g. "model.layers.3.self_attn.q_proj"
    axis: str
    group_size: int  # rows/columns per group in each chunk
    chunks: int = 1  # fused projections: timm's qkv stacks [q; k; v]


@dataclass(frozen=True)
class PrunableBlock:
    name: str  # "layers.3.attn"
    layer: int
    kind: str  # "heads" | "channels"
    n_groups: int
    members: tuple[Member, ...]

    def lines(self, keep: torch.Tensor, member: Member) -> torch.Tensor:
        """Per-row (or column) keep flags of `member` from per-group flags `keep` (n_groups,)."""
        return keep.repeat_interleave(member.group_size).repeat(member.chunks)


def protected_layers(n_layers: int, first: int | None, last: bool) -> set[int]:
    """Layers never pruned: the first `first` (None: floor(10%) as the official code) and the last."""
    first = math.floor(0.1 * n_layers) if first is None else first
    protected = set(range(min(first, n_layers)))
    if last:
        protected.add(n_layers - 1)
    return protected


def protected_layers_for(prune: Any, n_layers: int) -> set[int]:
    """The layers a `PruneConfig` protects; `uniform` protects none, so every layer ends with one shape."""
    if prune.uniform:
        if prune.protect_first_layers or prune.protect_last_layer:
            raise ConfigError("model.prune.uniform=true prunes every layer to the same shape: leave "
                              "model.prune.protect_first_layers and model.prune.protect_last_layer unset (or 0/false)")
        return set()
    last = True if prune.protect_last_layer is None else prune.protect_last_layer
    return protected_layers(n_layers, prune.protect_first_layers, last)


def llama_blocks(config: Any, protected: set[int]) -> list[PrunableBlock]:
    """Blocks of a transformers LLaMA-layout decoder (LLaMA 1/2/3, GQA included)."""
    head_dim = config.head_dim
    n_rep = config.num_attention_heads // config.num_key_value_heads
    blocks = []
    for i in range(config.num_hidden_layers):
        if i in protected:
            continue
        attn, mlp = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        blocks.append(PrunableBlock(f"layers.{i}.attn", i, "heads", config.num_key_value_heads, (
            Member(f"{attn}.q_proj", "out", n_rep * head_dim),
            Member(f"{attn}.k_proj", "out", head_dim),
            Member(f"{attn}.v_proj", "out", head_dim),
            Member(f"{attn}.o_proj", "in", n_rep * head_dim),
        )))
        blocks.append(PrunableBlock(f"layers.{i}.mlp", i, "channels", config.intermediate_size, (
            Member(f"{mlp}.gate_proj", "out", 1),
            Member(f"{mlp}.up_proj", "out", 1),
            Member(f"{mlp}.down_proj", "in", 1),
        )))
    return blocks


def vit_blocks(model: Any, protected: set[int]) -> list[PrunableBlock]:
    """Blocks of a timm VisionTransformer (fused qkv, proj, fc1, fc2)."""
    blocks = []
    for i, block in enumerate(model.blocks):
        if i in protected:
            continue
        attn = block.attn
        blocks.append(PrunableBlock(f"blocks.{i}.attn", i, "heads", attn.num_heads, (
            Member(f"blocks.{i}.attn.qkv", "out", attn.head_dim, chunks=3),
            Member(f"blocks.{i}.attn.proj", "in", attn.head_dim),
        )))
        blocks.append(PrunableBlock(f"blocks.{i}.mlp", i, "channels", block.mlp.fc1.out_features, (
            Member(f"blocks.{i}.mlp.fc1", "out", 1),
            Member(f"blocks.{i}.mlp.fc2", "in", 1),
        )))
    return blocks
