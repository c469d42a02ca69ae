"""How ASR is trained, watched and exported: shared by `method: asr` and RDNet's `asr:` block."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ASRConfig:
    """How ASR is trained, watched and exported; shared by `method: asr` and RDNet's `asr:` block."""

    enabled: bool = True  # RDNet: feed every ESE gate a learnable psi (method asr: see model.variant)
    psi_init: float = 0.1  # official initialisation of the learnable attention input
    export_atol: float = 1e-5  # re-parameterized vs training-form outputs on real images (fp32)
    stripes: bool = True  # log the stripe ratio of input-dependent attention every validation
    stripes_max_samples: int = 512
