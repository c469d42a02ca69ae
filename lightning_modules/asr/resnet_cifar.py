"""CIFAR ResNet (post-activation bottleneck, ResNet164 by default) with SE / ASR(SE) / both.

The paper's CIFAR backbone (§3.4): depth 9n+2, n bottlenecks per stage, widths 16/32/64 (x4), 3x3
stem, 1x1 conv + BN projection at the start of each stage, global average pool, linear head.
Attention sits after the last BN of the residual branch, before the addition (§2.3).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.attention_reparam.attention import ASR, build_attention
from tenfold.errors import ConfigError

EXPANSION = 4
STAGE_WIDTHS = (16, 32, 64)

# Variant name -> (attention on psi, i.e. ASR; input-dependent attention), as in the paper's table.
VARIANTS: dict[str, tuple[bool, bool]] = {
    "baseline": (False, False),
    "se": (False, True),
    "asr": (True, False),
    "asr_se": (True, True),
}


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual branch; `bn3` is ASR(BN) when `asr`, then optional attention."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        attention: str | None,
        asr: bool,
        input_attention: bool,
    ) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        bn3 = nn.BatchNorm2d(out_channels)
        self.bn3 = ASR(bn3, build_attention(attention, out_channels)) if asr else bn3
        self.attention = build_attention(attention, out_channels) if input_attention else None
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attention is not None:
            out = out * self.attention(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNetCifar(nn.Module):
    """CIFAR ResNet of depth 9n+2 (164: n = 18) for 32x32 inputs.

    `attention` names the module in `ATTENTIONS` used by the ASR and/or input-dependent branch;
    `asr` applies it to psi inside bn3, `input_attention` applies it to the features after bn3.
    """

    def __init__(
        self,
        depth: int = 164,
        num_classes: int = 100,
        attention: str = "se",
        asr: bool = False,
        input_attention: bool = False,
    ) -> None:
        super().__init__()
        if depth < 11 or (depth - 2) % 9:
            raise ConfigError(f"depth must be 9n+2 with n >= 1 (11, 20, 29, ..., 164), got {depth}")
        blocks = (depth - 2) // 9
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        stages, in_channels = [], STAGE_WIDTHS[0]
        for i, width in enumerate(STAGE_WIDTHS):
            stage = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                stage.append(
                    Bottleneck(in_channels, width, stride, attention, asr, input_attention)
                )
                in_channels = width * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # Official init (§3.4): convs N(0, sqrt(2 / (k*k*out))), BN (1, 0), Linear left at default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 256, 8, 8)
        return self.fc(x.mean((2, 3)))


def resnet_cifar(
    variant: str = "baseline",
    depth: int = 164,
    num_classes: int = 100,
    attention: str = "se",
    reparameterized: bool = False,
) -> ResNetCifar:
    """ResNet `variant` ("baseline", "se", "asr", "asr_se") with `attention` as its "se" module.

    `reparameterized` builds the architecture `variant` has after `reparameterize_model`, which an
    export loads into strictly: "asr" becomes "baseline" and "asr_se" becomes "se".
    """
    if variant not in VARIANTS:
        raise ConfigError(f"unknown ResNet variant {variant!r}; valid: {sorted(VARIANTS)}")
    asr, input_attention = VARIANTS[variant]
    return ResNetCifar(depth, num_classes, attention, asr and not reparameterized, input_attention)
