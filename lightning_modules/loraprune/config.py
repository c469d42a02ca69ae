"""LoRAPrune's typed configs; defaults are the official release (digest §2.9): LLaMA-7B, 50%."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from datamodules.causal_lm import CausalLMDataConfig
from lightning_modules.lora_pruning.config import LoRAConfig, PruneConfig
from tenfold.config import CheckpointConfig, ExperimentConfig, OptimConfig, TrainerConfig, check_kwargs


class WeightDtype(enum.StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class LoRAPruneModelConfig:
    base_path: str | None = None  # a local transformers checkpoint directory (LLaMA layout); None: `build`
    build: dict[str, Any] = field(default_factory=dict)  # LlamaConfig arguments for a model built from scratch
    dtype: WeightDtype = WeightDtype.float32  # the frozen base weights
    # Demo only: plain full-weight training of a from-scratch model before LoRAPrune starts, so that
    # pruning has learnt structure to destroy (pretrained LLMs need none).
    dense_warmup_steps: int = 0
    dense_warmup_lr: float = 3e-3
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

    def __post_init__(self) -> None:
        from transformers import LlamaConfig

        check_kwargs("model.build", self.build, LlamaConfig.__init__, taken=("vocab_size",))


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
