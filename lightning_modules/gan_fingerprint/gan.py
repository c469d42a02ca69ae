"""The DCGAN of the digits scale-down (digest section 12) and its adversarial losses; pure torch.

Generator: z in R^d -> linear to (2w, 2, 2) -> ConvT 4x4 s2 to (w, 4, 4) -> ConvT 4x4 s2 to (1, 8, 8) -> tanh.
The discriminator mirrors it. The paper's GANs are image-to-image models whose list is not available;
this unconditional 8x8 DCGAN is the platform's scale-down [R]. `train_generator` is the plain loop the
cached generator population is trained with; the Lightning module (module.py) runs the same two steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Generator(nn.Module):
    def __init__(self, z_dim: int = 32, width: int = 64) -> None:
        super().__init__()
        self.z_dim, self.width = z_dim, width
        self.project = nn.Sequential(nn.Linear(z_dim, 2 * width * 4), nn.BatchNorm1d(2 * width * 4), nn.ReLU(True))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor) -> Tensor:  # (B, d) or (B, d, 1, 1) -> (B, 1, 8, 8) in [-1, 1]
        h = self.project(z.flatten(1))
        return self.up(h.view(-1, 2 * self.width, 2, 2))


class Discriminator(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, True),
            nn.Flatten(),
            nn.Linear(2 * width * 4, 1),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, 1, 8, 8) -> (B,) real/fake logits
        return self.net(x).squeeze(1)


def build_generator(z_dim: int = 32, width: int = 64) -> Generator:
    """The export builder (export_meta.yaml names it)."""
    return Generator(z_dim, width)


def discriminator_loss(d: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """Non-saturating GAN loss of D: real -> 1, fake -> 0."""
    real_logits, fake_logits = d(real), d(fake)
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def generator_loss(d: nn.Module, fake: Tensor) -> Tensor:
    logits = d(fake)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def adam_pair(g: nn.Module, d: nn.Module, lr: float, betas: tuple[float, float]) -> tuple:
    return torch.optim.Adam(g.parameters(), lr=lr, betas=betas), torch.optim.Adam(d.parameters(), lr=lr, betas=betas)


def adversarial_step(
    g: nn.Module, d: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, real: Tensor, z: Tensor
) -> tuple[Tensor, Tensor]:
    """One DCGAN iteration: a D update on real vs G(z), then a G update; returns the two losses."""
    opt_d.zero_grad(set_to_none=True)
    loss_d = discriminator_loss(d, real, g(z).detach())
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    loss_g = generator_loss(d, g(z))
    loss_g.backward()
    opt_g.step()
    return loss_d.detach(), loss_g.detach()


def train_generator(
    images: Tensor,
    seed: int,
    width: int,
    iterations: int,
    z_dim: int = 32,
    batch_size: int = 64,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    init: Generator | None = None,
) -> Generator:
    """Train a generator from scratch on `images` (N, 1, 8, 8) in [-1, 1] (or continue `init` against a fresh D).

    Everything random (init, batches, z) comes from `seed`, so a population member is reproducible.
    """
    with torch.enable_grad():
        return _train(images, seed, width, iterations, z_dim, batch_size, lr, betas, init)


def _train(
    images: Tensor,
    seed: int,
    width: int,
    iterations: int,
    z_dim: int,
    batch_size: int,
    lr: float,
    betas: tuple[float, float],
    init: Generator | None,
) -> Generator:
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    g = init if init is not None else Generator(z_dim, width)
    d = Discriminator(width if init is None else g.width)
    opt_g, opt_d = adam_pair(g, d, lr, betas)
    g.train()
    d.train()
    for _ in range(iterations):
        index = torch.randint(len(images), (batch_size,), generator=rng)
        z = torch.randn(batch_size, g.z_dim, generator=rng)
        adversarial_step(g, d, opt_g, opt_d, images[index], z)
    return g.eval()
