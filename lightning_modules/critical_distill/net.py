"""The DC/DM/MTT ConvNet (ConvNet-3) and the synthetic set as a module; pure torch.

ConvNet: `depth` x [conv3x3 `width`, instance norm (GroupNorm(width, width), affine), ReLU, avg-pool 2],
then one linear classifier; the "ConvNet" of the DatasetCondensation / MTT code (width 128, depth 3).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch, size = channels, image_size
        for _ in range(depth):
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1),
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=False),
                nn.AvgPool2d(2, 2),
            ]
            in_ch, size = width, size // 2
        if size < 1:
            raise ValueError(f"a depth-{depth} ConvNet needs images of at least {2**depth} pixels, got {image_size}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * size * size, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)  # (B, width * size^2)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


def seeded_convnet(
    seed: int,
    channels: int,
    num_classes: int,
    image_size: int,
    width: int,
    depth: int,
    device: torch.device | str = "cpu",
) -> ConvNet:
    """A freshly initialised ConvNet whose weights depend only on `seed` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConvNet(channels, num_classes, image_size, width, depth)
    return net.to(device)


class SyntheticSet(nn.Module):
    """The distilled data: `ipc` learnable images per class (the parameters), their labels, MTT's step size."""

    def __init__(self, num_classes: int, ipc: int, image_shape: list[int], learn_lr: float | None = None) -> None:
        super().__init__()
        self.num_classes, self.ipc = num_classes, ipc
        self.images = nn.Parameter(torch.randn(num_classes * ipc, *image_shape))  # (K*ipc, C, H, W)
        self.register_buffer("labels", torch.arange(num_classes).repeat_interleave(ipc))
        self.register_buffer("initialised", torch.tensor(False))  # True once filled from real data / noise
        # MTT's learnable student step size (only there, so DDP sees no unused parameter in DM/DC).
        self.syn_lr = nn.Parameter(torch.tensor(float(learn_lr))) if learn_lr is not None else None

    def class_images(self, c: int) -> Tensor:
        return self.images[c * self.ipc : (c + 1) * self.ipc]

    def forward(self) -> tuple[Tensor, Tensor]:
        return self.images, self.labels


def build_synthetic_set(
    num_classes: int, ipc: int, image_shape: list[int], learn_lr: float | None = None
) -> SyntheticSet:
    """export_meta.yaml's builder: `model.pt` holds the distilled images and labels."""
    return SyntheticSet(num_classes, ipc, image_shape, learn_lr)
