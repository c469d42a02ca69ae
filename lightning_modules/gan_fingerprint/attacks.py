"""Attacks on a stolen generator, and the quality metric beside r [P: fine-tuning, pruning, image
perturbations are the attacks evaluated; R: every setting].

Model attacks return a modified copy (the protected G is never touched): fine-tuning against a fresh
discriminator, global L1 magnitude pruning of all conv/linear weights. Output
attacks wrap G: Gaussian noise, blur, JPEG (torchvision.io) and grey-level quantisation. Quality is a
digits-FID: torchmetrics' FID with the in-project classifier's embedding as the feature network (no
Inception weights exist offline), so it ranks generators on this data only.
"""

from __future__ import annotations

import copy
import enum

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchvision.io import decode_jpeg, encode_jpeg
from torchvision.transforms.v2 import functional as TF

from lightning_modules.gan_fingerprint.fingerprints import quantise
from lightning_modules.gan_fingerprint.gan import Generator, train_generator


def magnitude_pruned(generator: nn.Module, amount: float) -> nn.Module:
    """A copy with the `amount` fraction of smallest |w| over all weight kernels and matrices (parameters named
    `*weight` with >= 2 dims: conv, transposed conv, linear) set to zero: global L1 unstructured pruning.

    The same mask as `torch.nn.utils.prune.global_unstructured(..., L1Unstructured)` (tested), computed on the
    parameters because that function needs the layer modules, which a `torch.export` program does not keep.
    """
    pruned = copy.deepcopy(generator)
    weights = [p for name, p in pruned.named_parameters() if name.endswith("weight") and p.dim() >= 2]
    magnitudes = torch.cat([w.detach().abs().flatten() for w in weights])
    count = round(amount * magnitudes.numel())
    keep = torch.ones_like(magnitudes)
    if count:
        keep[torch.topk(magnitudes, count, largest=False).indices] = 0
    with torch.no_grad():
        for w, mask in zip(weights, keep.split([w.numel() for w in weights])):
            w.mul_(mask.view_as(w))
    return pruned.eval()


def weight_noise(generator: nn.Module, relative_sigma: float, seed: int) -> nn.Module:
    """A copy with Gaussian noise of `relative_sigma` x each weight tensor's std (a v2 surrogate)."""
    noisy = copy.deepcopy(generator)
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in noisy.parameters():
            scale = p.std() if p.numel() > 1 else p.abs().mean()
            p.add_(relative_sigma * scale * torch.randn(p.shape, generator=rng).to(p))
    return noisy.eval()


def fine_tuned(generator: Generator, images: Tensor, seed: int, iterations: int, lr: float) -> Generator:
    """The adversary continues adversarial training from G against a fresh discriminator."""
    return train_generator(
        images, seed, generator.width, iterations, generator.z_dim, lr=lr, init=copy.deepcopy(generator)
    )


class OutputPerturbation(enum.Enum):
    noise = "noise"  # strength: sigma on the [-1, 1] scale
    blur = "blur"  # strength: Gaussian kernel size (sigma = size / 3)
    jpeg = "jpeg"  # strength: JPEG quality
    quantise = "quantise"  # strength: number of grey levels


def perturb(images: Tensor, kind: OutputPerturbation, strength: float, seed: int = 0) -> Tensor:
    if kind is OutputPerturbation.noise:
        rng = torch.Generator().manual_seed(seed)
        return (images + strength * torch.randn(images.shape, generator=rng).to(images)).clamp(-1, 1)
    if kind is OutputPerturbation.blur:
        size = int(strength)
        return TF.gaussian_blur(images, [size, size], [size / 3, size / 3])
    if kind is OutputPerturbation.quantise:
        return quantise(images, int(strength))
    as_bytes = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    decoded = torch.stack([decode_jpeg(encode_jpeg(im, quality=int(strength))) for im in as_bytes])
    return (decoded.float() / 127.5 - 1).to(images.device)


class PerturbedGenerator(nn.Module):
    """G followed by a post-processing of its outputs (what the adversary serves)."""

    def __init__(self, generator: nn.Module, kind: OutputPerturbation, strength: float, seed: int = 0) -> None:
        super().__init__()
        self.generator, self.kind, self.strength, self.seed = generator, kind, strength, seed

    def forward(self, z: Tensor) -> Tensor:
        return perturb(self.generator(z), self.kind, self.strength, self.seed)


class EmbeddingFeatures(nn.Module):
    """A classifier's embedding as torchmetrics' FID feature network."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.embed_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.embed(x).double()


@torch.no_grad()
def digits_fid(classifier: nn.Module, real: Tensor, fake: Tensor) -> float:
    fid = FrechetInceptionDistance(
        feature=EmbeddingFeatures(classifier), normalize=True, input_img_size=tuple(real.shape[1:])
    )
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())
