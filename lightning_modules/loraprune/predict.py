"""Text generation with the pruned, LoRA-merged model a loraprune run exported to export/hf/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from lightning_modules.loraprune.pruned_llama import load_hf
from tenfold.errors import CheckpointError, ConfigError


def predict(run_dir: Path, inputs: list[str], options: dict[str, str]) -> Iterator[dict]:
    if not inputs:
        raise ConfigError("pass one or more prompts (quoted strings) to continue")
    folder = Path(run_dir) / "export" / "hf"
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} holds no exported model: train with export.enabled=true (the default)")
    from transformers import AutoTokenizer

    model = load_hf(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    max_new = int(options.get("max_new_tokens", 32))
    for prompt in inputs:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        yield {"prompt": prompt, "completion": tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)}
