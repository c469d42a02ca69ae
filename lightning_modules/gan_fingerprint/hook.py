"""The generator hook: any generator `nn.Module` behind one checked call, and the composite F = C o G.

A suspect is a black box from queries to images. The hook puts it in eval mode (BatchNorm statistics
would otherwise change its outputs, digest section 10), lays latent queries out as the generator wants
them ((B, d) or (B, d, 1, 1)), and checks what comes back: the registered output shape and finite values.
"""

from __future__ import annotations

import enum
import warnings

import torch
from torch import Tensor, nn

from lightning_modules.gan_fingerprint.errors import VerificationError


class InputKind(enum.Enum):
    latent = "latent"  # unconditional GAN: x is a code z in R^d
    latent_spatial = "latent_spatial"  # DCGAN-style (B, d, 1, 1) codes
    image = "image"  # image-to-image GAN: x is an image


class GeneratorHook(nn.Module):
    def __init__(
        self,
        generator: nn.Module,
        output_shape: tuple[int, ...],
        input_kind: InputKind = InputKind.latent,
        name: str = "suspect",
    ) -> None:
        super().__init__()
        self.generator, self.output_shape, self.input_kind, self.name = generator, tuple(output_shape), input_kind, name

    def forward(self, x: Tensor) -> Tensor:
        if self.generator.training:
            warnings.warn(
                f"{self.name}: the generator was in train mode; verification puts it in eval mode", stacklevel=2
            )
            self.generator.eval()
        if self.input_kind is InputKind.latent:
            x = x.flatten(1)
        elif self.input_kind is InputKind.latent_spatial:
            x = x.flatten(1)[..., None, None]
        out = self.generator(x)
        if tuple(out.shape[1:]) != self.output_shape:
            raise VerificationError(
                f"{self.name}: outputs of shape {tuple(out.shape[1:])}, but the registration "
                f"expects {self.output_shape}: this suspect is not a model of the registered task"
            )
        if not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).flatten(1).any(1).sum())
            raise VerificationError(
                f"{self.name}: {bad} of {len(out)} outputs contain NaN or Inf; "
                "the suspect's answers cannot be classified"
            )
        return out


class Composite(nn.Module):
    """F = C o G: the composite classifier the fingerprints are generated for and embedded into."""

    def __init__(self, classifier: nn.Module, generator: nn.Module) -> None:
        super().__init__()
        self.classifier, self.generator = classifier, generator

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.generator(x))
