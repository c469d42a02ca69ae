"""The exported zero-shot classifier: CLIP's image tower and the (C, D) class weights as one network."""

from __future__ import annotations

from typing import Any

import open_clip
import torch
from torch import Tensor, nn

from lightning_modules.mpvr.ensemble import zero_shot_logits


class ZeroShotClassifier(nn.Module):
    """images -> (B, C) logits = scale * cos(image embedding, class weight)."""

    def __init__(self, visual: nn.Module, num_classes: int, embed_dim: int, logit_scale: float = 100.0) -> None:
        super().__init__()
        self.visual = visual
        self.logit_scale = logit_scale
        self.register_buffer("class_weights", torch.zeros(num_classes, embed_dim))

    def forward(self, images: Tensor) -> Tensor:
        return zero_shot_logits(self.visual(images), self.class_weights, self.logit_scale)


def build(arch: str, num_classes: int, embed_dim: int, logit_scale: float = 100.0,
          custom: dict[str, Any] | None = None) -> ZeroShotClassifier:
    """The network of export/model.pt (random weights; the state dict fills them)."""
    clip = open_clip.CLIP(**custom) if arch == "custom" else open_clip.create_model(arch, pretrained=None)
    return ZeroShotClassifier(clip.visual, num_classes, embed_dim, logit_scale)
