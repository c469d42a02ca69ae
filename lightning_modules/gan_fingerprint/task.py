"""The task a fingerprinting run protects: what C classifies, what the generators are asked, how the adversary
fine-tunes a stolen copy. The datamodule builds it; the module reads nothing else about the data.

* latent (the digits demo): queries are codes z in R^d; the adversary continues DCGAN training on the real
  digits against a fresh discriminator.
* image (an image-to-image task, the paper's setting): queries are task input images; the adversary
  fine-tunes on the task's inputs against a fresh PatchDiscriminator on real output-domain images
  (`i2i.fine_tuned_i2i`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_modules.gan_fingerprint.attacks import fine_tuned
from lightning_modules.gan_fingerprint.hook import InputKind
from lightning_modules.gan_fingerprint.i2i import fine_tuned_i2i

FID_SEED = 7  # the latent codes every generator's quality is measured on


@dataclass
class Task:
    input_kind: InputKind
    clean: dict[str, tuple[Tensor, Tensor]]  # "train" / "val" / "test": labelled real images C classifies
    z_dim: int = 0  # latent tasks: the code size
    inputs: dict[str, Tensor] | None = None  # image tasks: G's input images, "train" and "test"

    def fine_tune(self, generator: nn.Module, seed: int, iterations: int, lr: float) -> nn.Module:
        real = self.clean["train"][0]
        if self.input_kind is InputKind.image:
            return fine_tuned_i2i(generator, self.inputs["train"], real, seed, iterations, lr)
        return fine_tuned(generator, real, seed, iterations, lr)

    def fid_queries(self, n: int) -> Tensor:
        """Queries whose answers are compared with the real test images (the quality beside r)."""
        if self.input_kind is InputKind.image:
            return self.inputs["test"][:n]
        return torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(FID_SEED))
