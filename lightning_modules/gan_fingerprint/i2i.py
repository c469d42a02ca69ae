"""Image-to-image GANs (the paper's setting): the adversary's fine-tuning of a stolen image-to-image G, and a
tiny task at digits scale, 4x4 -> 8x8 super-resolution [R]; pure torch.

The paper fingerprints image-to-image GANs (attribute editing, domain translation, super-resolution); its
models and data are not available. The procedural task's input is a digit average-pooled to 4x4 and its
generator a small upsampling CNN trained with an L1 loss (a stand-in for a pix2pix-style generator: what
fingerprinting needs is an image-input `nn.Module`). `i2i_task.py` writes it as a task folder.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_modules.gan_fingerprint.gan import adam_pair, discriminator_loss, generator_loss


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
        up = F.interpolate(x, scale_factor=2.0, mode="nearest")
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


class PatchDiscriminator(nn.Module):
    """The adversary's fresh discriminator: strided 4x4 convolutions to a grid of real/fake logits, so one
    network fits any output size (PatchGAN-style) [R: the paper's fine-tuning setup is not known]."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * width, 1, 3, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, H/4 * W/4) logits
        return self.net(x).flatten(1)


def fine_tuned_i2i(
    generator: nn.Module,
    inputs: Tensor,
    real: Tensor,
    seed: int,
    iterations: int,
    lr: float,
    l1_weight: float = 100.0,
    batch_size: int = 64,
) -> nn.Module:
    """The adversary continues training a copy of the stolen G on its task: a fresh PatchDiscriminator on real
    output-domain images (`real`) against G~(x) for task inputs x, plus `l1_weight` x L1 to the stolen G's own
    answers, which keeps the task without paired targets (pix2pix's weight 100) [R]. Everything random comes
    from `seed`; `generator` is not touched."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    g = copy.deepcopy(generator).train()
    d = PatchDiscriminator(real.shape[1]).train()
    opt_g, opt_d = adam_pair(g, d, lr, (0.5, 0.999))
    with torch.enable_grad():
        for _ in range(iterations):
            x = inputs[torch.randint(len(inputs), (batch_size,), generator=rng)]
            y = real[torch.randint(len(real), (batch_size,), generator=rng)]
            with torch.no_grad():
                anchor = generator(x)
            opt_d.zero_grad(set_to_none=True)
            discriminator_loss(d, y, g(x).detach()).backward()
            opt_d.step()
            opt_g.zero_grad(set_to_none=True)
            fake = g(x)
            (generator_loss(d, fake) + l1_weight * F.l1_loss(fake, anchor)).backward()
            opt_g.step()
    return g.eval()
