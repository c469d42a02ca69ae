"""The callbacks an ASR-trained model brings: fold at export, and watch the stripes."""

from __future__ import annotations

from callbacks.reparameterize import ReparameterizeForExport
from lightning_modules.attention_reparam.config import ASRConfig
from lightning_modules.attention_reparam.stripes_callback import AttentionStripes


def asr_callbacks(cfg: ASRConfig, uses_asr: bool, has_input_attention: bool) -> list:
    callbacks: list = []
    if uses_asr:
        callbacks.append(ReparameterizeForExport(atol=cfg.export_atol))
    if cfg.stripes and has_input_attention:
        callbacks.append(AttentionStripes(max_samples=cfg.stripes_max_samples))
    return callbacks
