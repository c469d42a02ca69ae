"""LoRA through `peft`: wrapping a model, and reading the tensors of one wrapped linear."""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Linear as LoraLinear
from torch import Tensor, nn

ADAPTER = "default"


def wrap_with_lora(
    model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float, modules_to_save: list[str]
) -> PeftModel:
    """`model` with LoRA on every linear whose name ends with one of `targets`; everything else frozen
    except `modules_to_save` (e.g. a new classifier head)."""
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        modules_to_save=list(modules_to_save) or None)
    return get_peft_model(model, config)


@dataclass
class LinearParts:
    """The tensors of a (possibly LoRA-wrapped) linear: y = W0 x + b + scale * B A x."""

    weight: Tensor  # W0 (d_out, d_in)
    bias: Tensor | None
    lora_a: Tensor | None  # (r, d_in)
    lora_b: Tensor | None  # (d_out, r)
    scale: float


def linear_parts(module: nn.Module) -> LinearParts:
    if isinstance(module, LoraLinear):
        base = module.get_base_layer()
        return LinearParts(base.weight, base.bias, module.lora_A[ADAPTER].weight, module.lora_B[ADAPTER].weight,
                           float(module.scaling[ADAPTER]))
    if isinstance(module, nn.Linear):
        return LinearParts(module.weight, module.bias, None, None, 0.0)
    raise TypeError(f"expected a linear or a peft LoRA linear, got {type(module).__name__}")
