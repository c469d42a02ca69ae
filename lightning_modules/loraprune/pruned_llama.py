"""A LLaMA whose layers have their own numbers of heads and FFN channels, in `transformers` format.

`LlamaConfig` has one head count and one intermediate size for all layers; a pruned model needs one per
layer. They are stored in the config as `loraprune_layer_shapes` (a list of {"kv_heads",
"intermediate_size"}), and `PrunedLlamaForCausalLM` resizes its linears from it before the weights are
loaded, so `PrunedLlamaForCausalLM.from_pretrained(dir)` rebuilds the sliced model and `generate` works.
LLaMA's forward reads head counts from tensor shapes and keeps the query/KV ratio per layer, which
pruning whole KV groups preserves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from lightning_modules.lora_pruning.groups import PrunableBlock

SHAPES_KEY = "loraprune_layer_shapes"


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        shapes = getattr(config, SHAPES_KEY, None)
        if shapes:
            _resize_layers(self, config, shapes)


def layer_shapes(config: LlamaConfig, blocks: list[PrunableBlock], keeps: dict[str, torch.Tensor]) -> list[dict]:
    """Per-layer {"kv_heads", "intermediate_size"} after pruning (unpruned layers keep the config's)."""
    shapes = [{"kv_heads": config.num_key_value_heads, "intermediate_size": config.intermediate_size}
              for _ in range(config.num_hidden_layers)]
    for block in blocks:
        key = "kv_heads" if block.kind == "heads" else "intermediate_size"
        shapes[block.layer][key] = int(keeps[block.name].sum())
    return shapes


def pruned_llama_from_sliced(sliced: LlamaForCausalLM, shapes: list[dict]) -> PrunedLlamaForCausalLM:
    """The sliced model as a `PrunedLlamaForCausalLM` (its config records the shapes); loaded strictly,
    so a slicing that disagrees with the recorded shapes fails here."""
    config = LlamaConfig.from_dict({**sliced.config.to_dict(), SHAPES_KEY: shapes})
    model = PrunedLlamaForCausalLM(config).to(dtype=next(sliced.parameters()).dtype)
    model.load_state_dict(sliced.state_dict(), strict=True)
    return model.eval()


def build_pruned_llama(config: dict[str, Any]) -> PrunedLlamaForCausalLM:
    """Builder named in export_meta.yaml: the network the exported state dict loads into."""
    return PrunedLlamaForCausalLM(LlamaConfig.from_dict(config))


def _resize_layers(model: LlamaForCausalLM, config: LlamaConfig, shapes: list[dict]) -> None:
    n_rep = config.num_attention_heads // config.num_key_value_heads
    hidden, head_dim = config.hidden_size, config.head_dim
    for layer, shape in zip(model.model.layers, shapes, strict=True):
        kv_dim, channels = shape["kv_heads"] * head_dim, shape["intermediate_size"]
        attn, mlp = layer.self_attn, layer.mlp
        attn.q_proj = _like(attn.q_proj, hidden, kv_dim * n_rep)
        attn.k_proj = _like(attn.k_proj, hidden, kv_dim)
        attn.v_proj = _like(attn.v_proj, hidden, kv_dim)
        attn.o_proj = _like(attn.o_proj, kv_dim * n_rep, hidden)
        mlp.gate_proj = _like(mlp.gate_proj, hidden, channels)
        mlp.up_proj = _like(mlp.up_proj, hidden, channels)
        mlp.down_proj = _like(mlp.down_proj, channels, hidden)
        mlp.intermediate_size = channels


def _like(linear: nn.Linear, d_in: int, d_out: int) -> nn.Linear:
    if linear.in_features == d_in and linear.out_features == d_out:
        return linear
    return nn.Linear(d_in, d_out, bias=linear.bias is not None, device=linear.weight.device,
                     dtype=linear.weight.dtype)
