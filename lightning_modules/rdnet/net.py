"""RDNet (DenseNets Reloaded, arXiv 2403.19588) as built by timm: no hand-written copy of the net.

`arch` passes keyword overrides to timm's RDNet constructor (e.g. a reduced stem and growth rates
for the CPU demo); the block rules (concatenation, transitions, ESE, layer scale) stay timm's.
"""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from lightning_modules.attention_reparam.rdnet_asr import apply_asr_to_rdnet, plain_rdnet_kwargs

VARIANTS = ("rdnet_tiny", "rdnet_small", "rdnet_base", "rdnet_large")
# Stochastic-depth rate of the paper's ImageNet-1K recipe, per variant (digest §2.6).
PAPER_DROP_PATH = {"rdnet_tiny": 0.15, "rdnet_small": 0.35, "rdnet_base": 0.4, "rdnet_large": 0.5}


def build_rdnet(
    name: str,
    num_classes: int,
    drop_path_rate: float | None = None,
    drop_rate: float = 0.0,
    pretrained_file: str | None = None,
    arch: dict[str, Any] | None = None,
    asr: bool = False,
    asr_psi_init: float = 0.1,
    reparameterized: bool = False,
) -> nn.Module:
    """An RDNet variant; `pretrained_file` is a local timm/official checkpoint (never downloaded).

    `asr` feeds every ESE gate a learnable input (ASR, arXiv 2304.06345); `reparameterized` builds
    what such a model folds into at export: the same RDNet with plain blocks and no gates.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown RDNet variant '{name}'; choose one of {', '.join(VARIANTS)}")
    arch = dict(arch or {})
    if asr and reparameterized:
        arch.update(plain_rdnet_kwargs(name, **arch))
    model = timm.create_model(
        name,
        pretrained=pretrained_file is not None,
        pretrained_cfg_overlay={"file": pretrained_file} if pretrained_file else None,
        num_classes=num_classes,
        drop_path_rate=PAPER_DROP_PATH[name] if drop_path_rate is None else drop_path_rate,
        drop_rate=drop_rate,
        **arch,
    )
    return apply_asr_to_rdnet(model, asr_psi_init) if asr and not reparameterized else model
