"""The sliced LoRAPrune LM as a transformers model, and its `save_pretrained` export (export/hf/).

Layers with their own shapes (the default: protected layers keep theirs) become a `PrunedLlamaForCausalLM`
(`modeling_pruned_llama.py`, self-contained): `save_pretrained` copies that file beside the weights and writes
`auto_map` into config.json, so `AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads it
without tenfold. When every layer ends with the same shape (`model.prune.uniform=true`) the export is a stock
`LlamaForCausalLM` whose config carries the pruned head count and FFN width: no remote code at all.
Inside the project both classes are registered with the Auto classes, so tenfold itself never runs code
from a run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lightning_modules.lora_pruning.groups import PrunableBlock
from lightning_modules.loraprune.modeling_pruned_llama import PrunedLlamaConfig, PrunedLlamaForCausalLM

AutoConfig.register(PrunedLlamaConfig.model_type, PrunedLlamaConfig, exist_ok=True)
AutoModelForCausalLM.register(PrunedLlamaConfig, PrunedLlamaForCausalLM, exist_ok=True)
# What `save_pretrained` names in config.json's auto_map (and copies the defining file for).
PrunedLlamaConfig.register_for_auto_class()
PrunedLlamaForCausalLM.register_for_auto_class("AutoModelForCausalLM")

_NOT_ARCHITECTURE = ("model_type", "architectures", "auto_map", "layer_shapes", "transformers_version")


def layer_shapes(config: LlamaConfig, blocks: list[PrunableBlock], keeps: dict[str, torch.Tensor]) -> list[dict]:
    """Per-layer {"kv_heads", "intermediate_size"} after pruning (unpruned layers keep the config's)."""
    shapes = [{"kv_heads": config.num_key_value_heads, "intermediate_size": config.intermediate_size}
              for _ in range(config.num_hidden_layers)]
    for block in blocks:
        key = "kv_heads" if block.kind == "heads" else "intermediate_size"
        shapes[block.layer][key] = int(keeps[block.name].sum())
    return shapes


def pruned_config(config: dict[str, Any], shapes: list[dict]) -> LlamaConfig:
    """The config of the pruned model: a stock `LlamaConfig` when every layer has one shape, else a
    `PrunedLlamaConfig` recording the per-layer shapes."""
    base = {k: v for k, v in config.items() if k not in _NOT_ARCHITECTURE}
    n_rep = base["num_attention_heads"] // base["num_key_value_heads"]
    head_dim = base.get("head_dim") or base["hidden_size"] // base["num_attention_heads"]
    if len({(s["kv_heads"], s["intermediate_size"]) for s in shapes}) == 1:
        kv, channels = shapes[0]["kv_heads"], shapes[0]["intermediate_size"]
        return LlamaConfig(**{**base, "num_key_value_heads": kv, "num_attention_heads": kv * n_rep,
                              "intermediate_size": channels, "head_dim": head_dim})
    return PrunedLlamaConfig(layer_shapes=shapes, **{**base, "head_dim": head_dim})


def model_for(config: LlamaConfig) -> LlamaForCausalLM:
    return PrunedLlamaForCausalLM(config) if isinstance(config, PrunedLlamaConfig) else LlamaForCausalLM(config)


def pruned_llama_from_sliced(sliced: LlamaForCausalLM, shapes: list[dict]) -> LlamaForCausalLM:
    """The sliced model in its export class; loaded strictly, so a slicing that disagrees with the
    recorded shapes fails here."""
    model = model_for(pruned_config(sliced.config.to_dict(), shapes)).to(dtype=next(sliced.parameters()).dtype)
    model.load_state_dict(sliced.state_dict(), strict=True)
    return model.eval()


def build_pruned_llama(config: dict[str, Any]) -> LlamaForCausalLM:
    """Builder named in export_meta.yaml: the network the exported state dict loads into (`config` is the
    base model's config plus `layer_shapes`)."""
    return model_for(pruned_config(config, config["layer_shapes"]))


def save_hf(model: LlamaForCausalLM, tokenizer: Any, folder: Path) -> None:
    """`save_pretrained` of the model (with its modeling file and auto_map when it is per-layer) and tokenizer."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def load_hf(folder: Path) -> LlamaForCausalLM:
    """An export/hf/ directory through `AutoModelForCausalLM` and the project's own classes (no remote code)."""
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, trust_remote_code=False).eval()
