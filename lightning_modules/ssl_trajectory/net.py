"""Backbone and heads (paper §2.2-2.3): torchvision ResNet-18 with a CIFAR stem, lightly's projection heads.

The backbone is torchvision's `ResNet` (BasicBlock, [2, 2, 2, 2]) with the 7×7/stride-2 conv and the
max-pool replaced by a 3×3/stride-1 conv, so a 32×32 input gives layer3 256×8×8, layer4 512×4×4 and a
512-d pooled feature. `width` < 64 narrows every stage (CPU demo only); width 64 is exactly ResNet-18 and
keeps torchvision's parameter names, so `imagenet_init` can load torchvision's checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import (
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    VICRegProjectionHead,
)
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

LAYERS = ("pooled", "layer3", "layer4")


class CifarResNet(ResNet):
    """torchvision ResNet with the CIFAR stem; `forward` gives the pooled feature, `features` all three."""

    def __init__(self, width: int = 64, blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__(BasicBlock, list(blocks))
        if width != 64:  # rebuild the stages narrower with torchvision's own layer factory
            self.inplanes = width
            self.bn1 = nn.BatchNorm2d(width)
            self.layer1 = self._make_layer(BasicBlock, width, blocks[0])
            self.layer2 = self._make_layer(BasicBlock, 2 * width, blocks[1], stride=2)
            self.layer3 = self._make_layer(BasicBlock, 4 * width, blocks[2], stride=2)
            self.layer4 = self._make_layer(BasicBlock, 8 * width, blocks[3], stride=2)
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.maxpool = nn.Identity()
        self.fc = nn.Identity()
        self.feature_dim = 8 * width
        for m in self.modules():  # torchvision's initialisation, also for the rebuilt parts
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """{"layer3": (B, 4w, H/4, W/4), "layer4": (B, 8w, H/8, W/8), "pooled": (B, 8w)}."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        layer3 = self.layer3(x)
        layer4 = self.layer4(layer3)
        return {"layer3": layer3, "layer4": layer4, "pooled": torch.flatten(self.avgpool(layer4), 1)}

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)["pooled"]


def build_backbone(width: int = 64, blocks: list[int] | tuple[int, ...] = (2, 2, 2, 2)) -> CifarResNet:
    return CifarResNet(width, tuple(blocks))


def load_imagenet_init(backbone: CifarResNet, path: str) -> list[str]:
    """torchvision's ImageNet ResNet-18 weights, minus the stem and fc (as the released code does).

    Off by default: the paper is self-supervised from scratch. Returns the keys that were not loaded.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("conv1.", "fc."))}
    missing, _ = backbone.load_state_dict(state, strict=False)
    return missing


def patch_norm(feature_map: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C·H·W): each channel's spatial map L2-normalised, then flattened (the kNN code)."""
    return F.normalize(feature_map.flatten(2), dim=2).flatten(1)


def build_projector(kind: str, in_dim: int, hidden_dim: int, out_dim: int) -> nn.Module:
    """lightly's heads: VICReg 3-layer MLP (BN + ReLU), SimCLR 2-layer, SimSiam 3-layer projector."""
    if kind == "vicreg":
        return VICRegProjectionHead(in_dim, hidden_dim, out_dim, num_layers=3)
    if kind == "simclr":
        return SimCLRProjectionHead(in_dim, hidden_dim, out_dim)
    if kind == "simsiam":
        return SimSiamProjectionHead(in_dim, hidden_dim, out_dim)
    raise ValueError(kind)


def build_predictor(out_dim: int, hidden_dim: int) -> nn.Module:
    return SimSiamPredictionHead(out_dim, hidden_dim, out_dim)
