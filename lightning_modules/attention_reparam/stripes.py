"""The Stripe Observation (§2.2): attention vectors of different inputs approach a constant vector.

Stacking one layer's attention vectors as rows (inputs) x columns (channels) shows vertical
stripes. `stripe_statistic` measures them; `input_dependent_attentions` finds what to record.
"""

import torch
from timm.layers import EffectiveSEModule, SEModule
from torch import nn

from lightning_modules.attention_reparam.attention import ASR, ChannelAttention


def stripe_statistic(attn: torch.Tensor) -> dict[str, float]:
    """Stripe ratio of attention vectors `attn` (N inputs, C channels); stripes mean ratio << 1.

    within = mean_c std_n a[n, c] (spread over inputs), between = std_c mean_n a[n, c] (spread over
    channels), ratio = within / between. Population std (no Bessel correction).
    """
    if attn.dim() != 2:
        raise ValueError(f"attn must be (N inputs, C channels), got shape {tuple(attn.shape)}")
    attn = attn.double()
    within = attn.std(dim=0, correction=0).mean().item()
    between = attn.mean(dim=0).std(correction=0).item()
    ratio = within / between if between > 0 else float("inf")
    return {"within": within, "between": between, "ratio": ratio}


def input_dependent_attentions(model: nn.Module) -> dict[str, nn.Module]:
    """Modules of `model` whose output is an input-dependent attention vector (B, C, 1, 1).

    Ours (`ChannelAttention`, except inside ASR where the input is psi) and the sigmoid gate of
    timm's SE / ESE modules (e.g. in a plain timm RDNet), keyed by module name.
    """
    in_asr = {id(m) for asr in model.modules() if isinstance(asr, ASR) for m in asr.modules()}
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, ChannelAttention) and id(module) not in in_asr:
            found[name] = module
        elif isinstance(module, (SEModule, EffectiveSEModule)):
            # timm returns x * gate(...); the gate's output is the attention vector.
            found[f"{name}.gate"] = module.gate
    return found
