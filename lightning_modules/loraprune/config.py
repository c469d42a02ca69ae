"""LoRAPrune's typed configs; defaults are the official release (digest §2.9): LLaMA-7B, 50%."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datamodules.causal_lm import CausalLMDataConfig
from lightning_modules.loraprune.importance import ImportancePower
from lightning_modules.loraprune.scoring import Criterion
from tenfold.config import CheckpointConfig, ExperimentConfig, OptimConfig, TrainerConfig

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
    protect_first_layers: int | None = None  # None: floor(10% of layers), as the official code
    protect_last_layer: bool = True
    seed: int = 0  # the random criterion's scores (the same on every rank)


@dataclass
class LoRAPruneModelConfig:
    base_path: str | None = None  # a local transformers checkpoint directory (LLaMA layout); None: `build`
    build: dict[str, Any] = field(default_factory=dict)  # LlamaConfig arguments for a model built from scratch
    dtype: str = "float32"  # float32 | bfloat16 | float16: the frozen base weights
    # Demo only: plain full-weight training of a from-scratch model before LoRAPrune starts, so that
    # pruning has learnt structure to destroy (pretrained LLMs need none).
    dense_warmup_steps: int = 0
    dense_warmup_lr: float = 3e-3
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)


@dataclass
class LoRAPruneConfig(ExperimentConfig):
    method: str = "loraprune"
    model: LoRAPruneModelConfig = field(default_factory=LoRAPruneModelConfig)
    data: CausalLMDataConfig = field(default_factory=CausalLMDataConfig)
    # AdamW 1e-4, no LR warm-up, 2 epochs, global batch 128 = micro-batch 2 x 64 accumulation (1 GPU).
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(name="adamw", lr=1e-4, weight_decay=0.0, reference_batch_size=128,
                                            scheduler="none")
    )
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_epochs=2, accumulate_grad_batches=64, precision="16-mixed")
    )
    # Best = lowest validation loss among checkpoints already at the final sparsity (a less pruned model
    # would always win on plain val/loss).
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/loss_at_target"))
