"""A compact NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) in pure torch.

DeepLens's end-to-end EDoF recipe pairs the lens with a small restoration network and ships NAFNet (width
16-32) for it (digest section 4). No maintained pip package provides NAFNet offline (it lives in the authors'
BasicSR fork), so the few blocks are written here. Structure: a U-Net of NAF blocks (layer norm, pointwise
and depthwise convolutions, a "simple gate" that multiplies two channel halves instead of a nonlinearity,
simplified channel attention), stride-2 convolutions down, pixel shuffle up, additive skips, and a global
residual so the untrained network is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of every pixel of a (B, C, H, W) map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def simple_gate(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=1)
    return first * second


class NAFBlock(nn.Module):
    def __init__(self, channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.norm1 = LayerNorm2d(channels)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        # Simplified channel attention: a global average and one pointwise conv, no squeeze or sigmoid.
        self.channel_attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden // 2, hidden // 2, 1))
        self.project = nn.Conv2d(hidden // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.ffn_in = nn.Conv2d(channels, hidden, 1)
        self.ffn_out = nn.Conv2d(hidden // 2, channels, 1)
        # Both residual branches start switched off, so a fresh block is the identity.
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = simple_gate(self.depthwise(self.expand(self.norm1(x))))
        y = self.project(y * self.channel_attention(y))
        x = x + self.beta * y
        y = self.ffn_out(simple_gate(self.ffn_in(self.norm2(x))))
        return x + self.gamma * y


def _stage(channels: int, num_blocks: int) -> nn.Sequential:
    return nn.Sequential(*[NAFBlock(channels) for _ in range(num_blocks)])


class NAFNet(nn.Module):
    """(B, 3, H, W) degraded image in [0, 1] -> restored image; any H, W (padded internally)."""

    def __init__(
        self,
        width: int = 16,
        enc_blocks: tuple[int, ...] | list[int] = (1, 1, 1, 1),
        middle_blocks: int = 1,
        dec_blocks: tuple[int, ...] | list[int] = (1, 1, 1, 1),
        channels: int = 3,
    ) -> None:
        super().__init__()
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError(f"enc_blocks {list(enc_blocks)} and dec_blocks {list(dec_blocks)} need equal lengths")
        self.intro = nn.Conv2d(channels, width, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        c = width
        for n in enc_blocks:
            self.encoders.append(_stage(c, n))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = _stage(c, middle_blocks)
        for n in dec_blocks:
            # 1x1 conv to 2c then pixel shuffle: twice the resolution at half the channels.
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(_stage(c, n))
        self.ending = nn.Conv2d(width, channels, 3, padding=1)
        # A zero last layer makes the untrained network exactly the identity (the global residual), so
        # training starts from the rendered image's quality instead of below it. (NAFNet initialises this
        # conv randomly; with short CPU runs that costs many steps of just learning to copy the input.)
        nn.init.zeros_(self.ending.weight)
        nn.init.zeros_(self.ending.bias)
        self.multiple = 2 ** len(enc_blocks)

    def forward(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        x = self._pad(image)
        feats = self.intro(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feats = encoder(feats)
            skips.append(feats)
            feats = down(feats)
        feats = self.middle(feats)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips)):
            feats = decoder(up(feats) + skip)
        return (self.ending(feats) + x)[..., :height, :width]

    def _pad(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        return F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image


def build_restoration_net(width: int = 16, enc_blocks: list[int] | None = None, middle_blocks: int = 1,
                          dec_blocks: list[int] | None = None) -> NAFNet:
    """The export builder (`export_meta.yaml` names it): plain types in, a fresh network out."""
    enc = list(enc_blocks) if enc_blocks is not None else [1, 1, 1, 1]
    dec = list(dec_blocks) if dec_blocks is not None else [1] * len(enc)
    return NAFNet(width, enc, middle_blocks, dec)
