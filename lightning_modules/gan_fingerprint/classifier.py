"""The classifier C of the composite F = C o G, and its plain training loop; pure torch.

A small CNN on images in [-1, 1] (8x8 grey digits in the demo; any size and channel count for an
image-to-image task, pooled to 2x2 before the embedding) [R: the paper's classifiers are not known]. `embed(x)` is the
penultimate representation h that CFP-iBDv2's triplet loss and fine-grained head read, and that the
digits-FID uses as its feature network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DigitClassifier(nn.Module):
    def __init__(
        self, num_classes: int = 10, width: int = 64, embed_dim: int = 256, fine_classes: int = 0, in_channels: int = 1
    ) -> None:
        super().__init__()
        self.num_classes, self.embed_dim = num_classes, embed_dim
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1),
            nn.ReLU(True),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.ReLU(True),  # 4x4
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1),
            nn.ReLU(True),  # 2x2 for an 8x8 input
            # Pool and flatten in one slot: a parameter-free no-op at 8x8 that keeps the state-dict keys of
            # the classifiers trained before larger inputs were supported.
            nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()),
            nn.Linear(2 * width * 4, embed_dim),
            nn.ReLU(True),
        )
        self.head = nn.Linear(embed_dim, num_classes)
        # CFP-iBDv2's multi-task fine-grained head (natural class x source, 2K classes) [R]; absent otherwise.
        self.fine_head = nn.Linear(embed_dim, fine_classes) if fine_classes else None

    def embed(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, embed_dim)
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, K) logits
        return self.head(self.embed(x))


@torch.no_grad()
def init_fine_head(model: DigitClassifier) -> None:
    """Start the 2K-class head as two copies of the trained K-class head [R]: it then begins at "class u, source
    undecided" (loss ln 2) instead of a random 2K-way guess (ln 2K), whose large first gradients through the
    shared embedding cost C0's clean accuracy before any fingerprint is learned."""
    model.fine_head.weight.copy_(torch.cat([model.head.weight, model.head.weight]))
    model.fine_head.bias.copy_(torch.cat([model.head.bias, model.head.bias]))


def build_classifier(
    num_classes: int = 10, width: int = 64, embed_dim: int = 256, fine_classes: int = 0, in_channels: int = 1
) -> DigitClassifier:
    """The export builder (export_meta.yaml names it)."""
    return DigitClassifier(num_classes, width, embed_dim, fine_classes, in_channels)


def train_classifier(
    images: Tensor,
    labels: Tensor,
    seed: int,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    width: int = 64,
    num_classes: int | None = None,
) -> DigitClassifier:
    """C0: Adam on the real training images with a +-1 pixel random shift [R]."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    classes = num_classes or int(labels.max()) + 1
    model = DigitClassifier(classes, width, 4 * width, in_channels=images.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=rng)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            x = random_shift(images[index], rng)
            loss = F.cross_entropy(model(x), labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def random_shift(x: Tensor, rng: torch.Generator) -> Tensor:
    """Shift the whole batch by up to one pixel (background -1 fills the border)."""
    dy, dx = (int(v) for v in torch.randint(-1, 2, (2,), generator=rng))
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    return padded[..., 1 + dy : 1 + dy + x.shape[-2], 1 + dx : 1 + dx + x.shape[-1]]


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    return float((model(images).argmax(1) == labels).float().mean())
