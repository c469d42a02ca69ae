"""The typed configs of LoRA and of the pruning schedule (digest §2.5-2.6), shared by both LoRAPrune methods."""

from __future__ import annotations

from dataclasses import dataclass, field

from lightning_modules.lora_pruning.importance import ImportancePower
from lightning_modules.lora_pruning.scoring import Criterion
from tenfold.errors import ConfigError

LLAMA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: list(LLAMA_LORA_TARGETS))  # every pruned matrix

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"model.lora.rank={self.rank} must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.lora.dropout={self.dropout} must be in [0, 1)")


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

    def __post_init__(self) -> None:
        if not 0 <= self.final_sparsity < 1:
            raise ConfigError(f"model.prune.final_sparsity={self.final_sparsity} must be in [0, 1)")
        if not 0 <= self.initial_sparsity <= self.final_sparsity:
            raise ConfigError(f"model.prune.initial_sparsity={self.initial_sparsity} must be in [0, final_sparsity]")
        if self.every_n_steps < 1:
            raise ConfigError(f"model.prune.every_n_steps={self.every_n_steps} must be at least 1")
