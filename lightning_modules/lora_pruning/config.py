"""The typed configs of LoRA and of the pruning schedule (digest §2.5-2.6), shared by both LoRAPrune methods."""

from __future__ import annotations

from dataclasses import dataclass, field

from lightning_modules.lora_pruning.importance import ImportancePower
from lightning_modules.lora_pruning.scoring import Criterion

LLAMA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: list(LLAMA_LORA_TARGETS))  # every pruned matrix


@dataclass
class PruneConfig:
    """The iterative pruning schedule and criterion (digest §2.5-2.6)."""

    criterion: Criterion = Criterion.lora  # lora | grad (true W0 gradients) | magnitude | random
    power: ImportancePower = ImportancePower.abs  # abs (official code) | square (paper's Taylor form)
    final_sparsity: float = 0.5  # fraction of heads and of FFN channels removed in every pruned layer
    initial_sparsity: float = 0.0
    warmup: float = 0.1  # fraction of optimizer steps before the first pruning
    cooldown: float = 0.1  # fraction of steps at the final sparsity, fine-tuning only
    every_n_steps: int = 10  # prune_freq
    total_steps: int | None = None  # schedule length in optimizer steps; None: the whole run
    ema_decay: float = 0.9
    protect_first_layers: int | None = None  # None: floor(10% of layers), as the official code (0 if uniform)
    protect_last_layer: bool | None = None  # None: protected, as the official code (not if uniform)
    # Prune every layer to the same shape (no protected layers): the LM's HF export is then a stock
    # LlamaForCausalLM, loadable without remote code.
    uniform: bool = False
    seed: int = 0  # the random criterion's scores (the same on every rank)
