"""A LLaMA whose layers have their own numbers of KV heads and FFN channels, as a transformers model.

This file imports only torch and transformers: the LoRAPrune export copies it beside the weights and
names it in config.json's `auto_map` (the Hugging Face convention for custom architectures), so
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads a pruned model where tenfold is
not installed. `LlamaConfig` has one head count and one FFN width for all layers; `PrunedLlamaConfig`
adds `layer_shapes`, one {"kv_heads", "intermediate_size"} per layer, and `PrunedLlamaForCausalLM`
resizes its linears from it before the weights are loaded. LLaMA's forward reads head counts from
tensor shapes and keeps the query/KV ratio per layer, which pruning whole KV groups preserves.
"""

from __future__ import annotations

from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM


class PrunedLlamaConfig(LlamaConfig):
    model_type = "pruned_llama"

    def __init__(self, layer_shapes: list[dict] | None = None, **kwargs) -> None:
        self.layer_shapes = list(layer_shapes or [])  # per layer: {"kv_heads": int, "intermediate_size": int}
        super().__init__(**kwargs)


class PrunedLlamaForCausalLM(LlamaForCausalLM):
    config_class = PrunedLlamaConfig

    def __init__(self, config: PrunedLlamaConfig) -> None:
        super().__init__(config)
        if config.layer_shapes:
            _resize_layers(self, config)


def _resize_layers(model: LlamaForCausalLM, config: PrunedLlamaConfig) -> None:
    n_rep = config.num_attention_heads // config.num_key_value_heads
    hidden, head_dim = config.hidden_size, config.head_dim
    for layer, shape in zip(model.model.layers, config.layer_shapes, strict=True):
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
