"""The callbacks an ASR-trained model brings: fold at export, and watch the stripes."""

from __future__ import annotations

from callbacks.attention_stripes import AttentionStripes
from callbacks.reparameterize import ReparameterizeForExport
from lightning_modules.asr.config import ASRConfig


def asr_callbacks(cfg: ASRConfig, uses_asr: bool, has_input_attention: bool) -> list:
    callbacks: list = []
    if uses_asr:
        callbacks.append(ReparameterizeForExport(atol=cfg.export_atol))
    if cfg.stripes and has_input_attention:
        callbacks.append(AttentionStripes(max_samples=cfg.stripes_max_samples))
    return callbacks
