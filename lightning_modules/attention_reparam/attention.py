"""Channel attention and its ASR form (Attention-alike Structural Re-parameterization, §2.3-2.4).

A channel attention module maps features to per-channel weights v that rescale them. ASR feeds it
a learnable vector psi instead of the features, so v no longer depends on the input and folds
into the layer that produced the features. A new attention type is one `ChannelAttention`
subclass plus one entry in `ATTENTIONS`.
"""

import copy

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.errors import ConfigError
from tenfold.reparam import output_channels, scale_output_channels


class ChannelAttention(nn.Module):
    """Maps features (B, C, H, W) to per-channel weights (B, C, 1, 1) in [0, 1]."""


class SqueezeExcite(ChannelAttention):
    """SE of the official ASR code: pool -> Linear(C, round(C/16)) -> ReLU -> Linear -> sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = round(channels / reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3))  # (B, C); an identity on psi
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))[:, :, None, None]


class EffectiveSqueezeExcite(ChannelAttention):
    """Effective SE (RDNet's gate, timm `EffectiveSEModule`): hard-sigmoid(1x1 conv(pool(x)))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.fc(x.mean((2, 3), keepdim=True)))  # (B, C, 1, 1)


ATTENTIONS: dict[str, type[ChannelAttention]] = {
    "se": SqueezeExcite,
    "ese": EffectiveSqueezeExcite,
}


def build_attention(name: str, channels: int) -> ChannelAttention:
    """The attention module registered as `name`, for `channels` channels."""
    if name not in ATTENTIONS:
        raise ConfigError(f"unknown attention {name!r}; valid: {sorted(ATTENTIONS)}")
    return ATTENTIONS[name](channels)


class ASR(nn.Module):
    """y = layer(x) * attention(psi): attention on a learnable input, foldable into `layer`.

    `layer` must produce the attended channels directly (BatchNorm2d or Conv2d): the
    constant v then folds exactly into its weights (§2.4). psi starts at 0.1 as in the official
    code, so v starts near 0.5.
    """

    def __init__(
        self, layer: nn.Module, attention: ChannelAttention, psi_init: float = 0.1
    ) -> None:
        super().__init__()
        channels = output_channels(layer)
        self.layer = layer
        self.attention = attention
        # Created on the layer's device and dtype (the official code hard-codes .cuda()).
        self.psi = nn.Parameter(torch.full((1, channels, 1, 1), psi_init).to(layer.weight))

    def vector(self) -> torch.Tensor:
        """The attention weights v, the same for every input: (1, C, 1, 1)."""
        return self.attention(self.psi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) * self.vector()  # (B, C, H, W) * (1, C, 1, 1)

    def reparameterize(self) -> nn.Module:
        """A copy of `layer` with v folded into its weights; psi and the attention are gone."""
        folded = copy.deepcopy(self.layer)
        with torch.no_grad():
            scale_output_channels(folded, self.vector().flatten())
        return folded
