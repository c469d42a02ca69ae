"""The language model LoRAPrune works on: a local LLaMA-layout checkpoint, or one built from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from tenfold.errors import CheckpointError, ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_or_build_llama(base_path: str | None, build: dict[str, Any], tokenizer: Any, dtype: str) -> LlamaForCausalLM:
    """`from_pretrained(base_path)` (local files only), or a fresh model from `build` (LlamaConfig args;
    vocabulary size and special-token ids come from `tokenizer`)."""
    if dtype not in DTYPES:
        raise ConfigError(f"model.dtype={dtype} is not one of {', '.join(DTYPES)}")
    if base_path is None:
        if not build:
            raise ConfigError("set model.base_path to a local LLaMA checkpoint directory, or model.build to "
                              "LlamaConfig arguments for a model built from scratch")
        special = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
                   "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        config = LlamaConfig(**{**special, **build})
        return LlamaForCausalLM(config).to(DTYPES[dtype])
    if not Path(base_path, "config.json").is_file():
        raise CheckpointError(f"model.base_path={base_path} has no config.json: point it at a local transformers "
                              "checkpoint directory (e.g. the converted LLaMA-7B weights)")
    model = LlamaForCausalLM.from_pretrained(base_path, dtype=DTYPES[dtype], local_files_only=True)
    if model.config.model_type != "llama":
        raise CheckpointError(f"model.base_path={base_path} is a '{model.config.model_type}' model; LoRAPrune's "
                              "groups are defined for the LLaMA layout (q/k/v/o, gate/up/down)")
    return model


def causal_lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    input_ids, labels = batch
    return model(input_ids=input_ids, labels=labels).loss
