"""A tiny image-to-image task for the paper's setting at digits scale: 4x4 -> 8x8 super-resolution [R].

The paper fingerprints image-to-image GANs (attribute editing, domain translation, super-resolution); its
models and data are not available. Here the task input is a digit average-pooled to 4x4 (procedurally made
from the bundled digits) and the generator is a small upsampling CNN trained with an L1 loss (a
stand-in for a pix2pix-style generator: what fingerprinting needs is an image-input `nn.Module`). Pure torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def low_resolution(images: Tensor) -> Tensor:
    """(B, 1, 8, 8) -> (B, 1, 4, 4): the task input."""
    return F.avg_pool2d(images, 2)


class SuperResolver(nn.Module):
    """(B, 1, 4, 4) -> (B, 1, 8, 8) in [-1, 1]: nearest x2 upsampling, then a residual CNN."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.width = width
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, 1, 1),
            nn.ReLU(True),
            nn.Conv2d(width, width, 3, 1, 1),
            nn.ReLU(True),
            nn.Conv2d(width, 1, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.tanh(torch.atanh(up.clamp(-0.999, 0.999)) + self.body(up))


def train_super_resolver(
    images: Tensor, seed: int, width: int = 16, iterations: int = 200, batch_size: int = 64, lr: float = 3e-3
) -> SuperResolver:
    """L1 regression of the 8x8 digit from its 4x4 version; everything random comes from `seed`."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    g = SuperResolver(width)
    opt = torch.optim.Adam(g.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(iterations):
            target = images[torch.randint(len(images), (batch_size,), generator=rng)]
            loss = F.l1_loss(g(low_resolution(target)), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return g.eval()
