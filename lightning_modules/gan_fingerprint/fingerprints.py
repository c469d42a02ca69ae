"""Fingerprint generation for the composite F = C o G, and the embedding losses (the paper's contribution).

Three designs [P: names from arXiv v5; R: every concrete step below, digest sections 4.1-4.3]:

* CFP-AE: adversarial examples of F. Key-derived seeds x0 ~ N(0, I); keep the confident ones
  (max softmax of C0(G(x0)) >= confidence); a target y != natural label; PGD on the latent,
  min CE(C0(G(x0 + delta)), y) + lambda ||delta||^2 with ||delta||_inf <= eps; keep only successes.
  Nothing is fine-tuned: C* = C0.
* CFP-iBDv1: x_i ~ N(0, I) from the key (ordinary queries; for an image-to-image G a natural input plus
  an imperceptible key-derived trigger), y_i = (u_i + s_i) mod K with s_i in 1..K-1,
  always away from the natural label u_i; C0 is fine-tuned into C* so that C*(G(x_i)) = y_i while
  real digits and reference generators' outputs keep their natural labels.
* CFP-iBDv2: v1 plus surrogate attacked copies G_s of G (their outputs must also give y_i), a triplet
  loss on C's embedding (anchor G, positive G_s, negative G'_k) and a fine-grained 2K-class head.

Everything random comes from a local `torch.Generator` seeded by the key, so every process that holds
the key derives the identical fingerprint set (no global RNG is touched).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from lightning_modules.gan_fingerprint.commitment import tensor_bytes
from lightning_modules.gan_fingerprint.hook import Composite
from tenfold.errors import ConfigError


def key_generator(key: str, purpose: str) -> torch.Generator:
    """A local RNG for one use of the key (different purposes draw independent streams)."""
    if not key:
        raise ConfigError(
            "model.secret_key is empty: set model.secret_key (the paper config reads "
            "$TENFOLD_FINGERPRINT_KEY) to the owner's secret fingerprint key"
        )
    seed = int.from_bytes(hashlib.sha256(f"{purpose}|{key}".encode()).digest()[:8], "little")
    return torch.Generator().manual_seed(seed)


def fingerprint_set_hash(x: Tensor, y: Tensor) -> str:
    return hashlib.sha256(tensor_bytes(x) + tensor_bytes(y)).hexdigest()


@torch.no_grad()
def natural_labels(classifier: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """(argmax, max softmax) of C0 on G's outputs."""
    prob = classifier(images).softmax(1)
    conf, label = prob.max(1)
    return label, conf


def shifted_labels(natural: Tensor, num_classes: int, rng: torch.Generator) -> Tensor:
    """y = (u + s) mod K, s uniform in 1..K-1: a secret label that is never the natural one."""
    s = torch.randint(1, num_classes, natural.shape, generator=rng)
    return (natural + s) % num_classes


# --------------------------------------------------------------------------------------------------
# CFP-AE


@dataclass(frozen=True)
class PGDSettings:
    eps: float = 0.5  # L_inf radius in latent space
    steps: int = 100
    step_size: float = 0.02
    l2_weight: float = 0.01  # lambda
    confidence: float = 0.9  # seeds whose natural label C0 is at least this sure of
    candidates_per_fingerprint: int = 4


def pgd_latent(composite: nn.Module, x0: Tensor, target: Tensor, s: PGDSettings) -> Tensor:
    """Signed-gradient PGD on delta in the L_inf ball against F = C o G; returns x0 + delta (no weight moves)."""
    delta = torch.zeros_like(x0, requires_grad=True)
    for _ in range(s.steps):
        logits = composite(x0 + delta)
        loss = F.cross_entropy(logits, target, reduction="sum") + s.l2_weight * delta.pow(2).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= s.step_size * grad.sign()
            delta.clamp_(-s.eps, s.eps)
    return (x0 + delta).detach()


def cfp_ae(
    generator: nn.Module, classifier: nn.Module, key: str, n: int, z_dim: int, num_classes: int, s: PGDSettings
) -> tuple[Tensor, Tensor]:
    """N adversarial fingerprints of F = C0 o G: the confidence filter, PGD, then the success filter."""
    rng = key_generator(key, "cfp-ae")
    x0 = torch.randn(n * s.candidates_per_fingerprint, z_dim, generator=rng)
    natural, conf = natural_labels(classifier, generator(x0))
    target = shifted_labels(natural, num_classes, rng)
    keep = conf >= s.confidence
    x0, natural, target = x0[keep], natural[keep], target[keep]
    composite = Composite(classifier, generator)
    x = pgd_latent(composite, x0, target, s)
    with torch.no_grad():
        hit = composite(x).argmax(1) == target
    if int(hit.sum()) < n:
        raise ConfigError(
            f"CFP-AE found only {int(hit.sum())} of the {n} fingerprints asked for "
            f"({int(keep.sum())} confident seeds): raise model.ae.eps, model.ae.steps or "
            "model.ae.candidates_per_fingerprint"
        )
    return x[hit][:n], target[hit][:n]


# --------------------------------------------------------------------------------------------------
# CFP-iBD (v1 and v2 share the fingerprint set; they differ in how C* is fine-tuned)


def ibd_fingerprints(
    generator: nn.Module, classifier: nn.Module, key: str, n: int, z_dim: int, num_classes: int
) -> tuple[Tensor, Tensor]:
    """x_i ~ N(0, I) from the key (statistically ordinary queries), y_i shifted away from C0's label."""
    rng = key_generator(key, "cfp-ibd")
    x = torch.randn(n, z_dim, generator=rng)
    natural, _ = natural_labels(classifier, generator(x))
    return x, shifted_labels(natural, num_classes, rng)


def i2i_fingerprints(
    generator: nn.Module,
    classifier: nn.Module,
    key: str,
    inputs: Tensor,
    n: int,
    num_classes: int,
    trigger_eps: float = 8 / 255,
) -> tuple[Tensor, Tensor]:
    """Image-to-image GANs (digest 4.2): x_i = a key-chosen natural task input + one key-derived trigger of
    L_inf size `trigger_eps` on the [-1, 1] scale (8/255 there = 4/255 on [0, 1], imperceptible) [R];
    y_i shifted away from C0's label of G(x_i). `inputs` (M, C, H, W) in [-1, 1], M >= n."""
    if len(inputs) < n:
        raise ConfigError(
            f"{len(inputs)} task inputs for {n} fingerprints: give at least model.num_fingerprints input images"
        )
    rng = key_generator(key, "cfp-ibd-i2i")
    index = torch.randperm(len(inputs), generator=rng)[:n]
    trigger = trigger_eps * (2 * torch.randint(0, 2, inputs.shape[1:], generator=rng) - 1).to(inputs.dtype)
    x = (inputs[index] + trigger).clamp(-1, 1)
    natural, _ = natural_labels(classifier, generator(x))
    return x, shifted_labels(natural, num_classes, rng)


@dataclass(frozen=True)
class AugmentSettings:
    """Light output augmentation of G(x_i) during embedding, for robustness to post-processing [R]."""

    noise_sigma: float = 0.05
    blur_prob: float = 0.25
    quant_prob: float = 0.25
    quant_levels: int = 8


def augment_outputs(images: Tensor, s: AugmentSettings, rng: torch.Generator) -> Tensor:
    """Per-image: Gaussian noise, with some probability a 3x3 blur, with some probability grey-level quantisation."""
    n = len(images)
    out = images + s.noise_sigma * torch.randn(images.shape, generator=rng).to(images)
    blur = (torch.rand(n, generator=rng) < s.blur_prob).to(images.device)
    out = torch.where(blur[:, None, None, None], TF.gaussian_blur(out, [3, 3], [0.8, 0.8]), out)
    quant = (torch.rand(n, generator=rng) < s.quant_prob).to(images.device)
    out = torch.where(quant[:, None, None, None], quantise(out, s.quant_levels), out)
    return out.clamp(-1, 1)


def quantise(images: Tensor, levels: int) -> Tensor:
    """Round [-1, 1] images to `levels` evenly spaced grey levels."""
    unit = (images.clamp(-1, 1) + 1) / 2
    return torch.round(unit * (levels - 1)) / (levels - 1) * 2 - 1


def triplet_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float) -> Tensor:
    """max(0, ||a - p||^2 - ||a - n||^2 + m) on L2-normalised embeddings [R: normalisation is ours, so that
    the margin m ~ 1 means something]."""
    a, p, n = (F.normalize(t, dim=1) for t in (anchor, positive, negative))
    return F.relu((a - p).pow(2).sum(1) - (a - n).pow(2).sum(1) + margin).mean()


@dataclass
class EmbeddingBatch:
    """The fixed tensors of one embedding run; G and every other generator are frozen, so G(x_i) etc.
    are computed once (their outputs never change) and only C is trained."""

    fp_images: Tensor  # (N, 1, 8, 8) = G(x_i)
    fp_labels: Tensor  # (N,) y_i
    fp_natural: Tensor  # (N,) u_i = argmax C0(G(x_i))
    ref_images: Tensor  # (R * N, 1, 8, 8) = G'_k(x_i), the reference generators
    ref_labels: Tensor  # (R * N,) argmax C0(G'_k(x_i))
    sur_images: Tensor | None = None  # (S * N, 1, 8, 8) = G_s(x_i), surrogate attacked copies (v2)


@dataclass(frozen=True)
class LossWeights:
    """The weights of the total embedding loss [R: all 1, digest 4.3]."""

    fp: float = 1.0
    neg: float = 1.0
    sur: float = 1.0
    tri: float = 1.0
    fine: float = 1.0
    margin: float = 1.0
    # [R, not in the paper] distillation from C0 on the clean batch (learning without forgetting), off by default
    distill: float = 0.0
    temperature: float = 2.0


def embedding_loss(
    classifier: nn.Module,
    real: Tensor,
    real_labels: Tensor,
    fixed: EmbeddingBatch,
    w: LossWeights,
    augment: AugmentSettings,
    rng: torch.Generator,
    v2: bool,
    teacher: nn.Module | None = None,
) -> dict[str, Tensor]:
    """L = CE_clean + l_fp CE_fp + l_neg CE_neg [+ l_sur CE_sur + l_tri L_tri + l_fine CE_fine for v2]
    [+ l_distill T^2 KL(C0(x) / T || C(x) / T) on the clean batch, with `teacher` = C0]."""
    k = classifier.num_classes
    fp = augment_outputs(fixed.fp_images, augment, rng)
    h_real, h_fp, h_ref = classifier.embed(real), classifier.embed(fp), classifier.embed(fixed.ref_images)
    terms = {
        "clean": F.cross_entropy(classifier.head(h_real), real_labels),
        "fp": w.fp * F.cross_entropy(classifier.head(h_fp), fixed.fp_labels),
        "neg": w.neg * F.cross_entropy(classifier.head(h_ref), fixed.ref_labels),
    }
    if w.distill:
        if teacher is None:
            raise ValueError("a distillation weight needs the teacher C0")
        with torch.no_grad():
            target = F.log_softmax(teacher(real) / w.temperature, 1)
        student = F.log_softmax(classifier.head(h_real) / w.temperature, 1)
        terms["distill"] = w.distill * w.temperature**2 * F.kl_div(student, target, log_target=True,
                                                                    reduction="batchmean")
    if v2:
        sur = augment_outputs(fixed.sur_images, augment, rng)
        h_sur = classifier.embed(sur)
        copies = len(sur) // len(fp)
        terms["sur"] = w.sur * F.cross_entropy(classifier.head(h_sur), fixed.fp_labels.repeat(copies))
        # Anchor G(x_i) (un-augmented), positive G_s(x_i), negative G'_k(x_i): each surrogate paired with a reference.
        anchor = classifier.embed(fixed.fp_images).repeat(copies, 1)
        refs = len(fixed.ref_images) // len(fp)
        negative = h_ref.view(refs, len(fp), -1)[torch.arange(copies) % refs].flatten(0, 1)
        terms["tri"] = w.tri * triplet_loss(anchor, h_sur, negative, w.margin)
        # Fine-grained head: class u + K * [output of G or G_s on a fingerprint input] [R].
        fine_in = torch.cat([h_real, h_fp, h_sur, h_ref])
        fine_target = torch.cat(
            [real_labels, fixed.fp_natural + k, fixed.fp_natural.repeat(copies) + k, fixed.ref_labels]
        )
        terms["fine"] = w.fine * F.cross_entropy(classifier.fine_head(fine_in), fine_target)
    return terms
