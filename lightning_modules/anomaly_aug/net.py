"""DRAEM's two sub-networks (Zavrtanik et al. 2021, `model_unet.py`), its init, and the exported detector.

Attribute names follow DRAEM's (and anomalib's) modules, so state dicts load into either strictly.

* `ReconstructiveSubNetwork` R: encoder-decoder *without* skips; widths w, 2w, 4w, 8w, 8w with 4 max-pools,
  decoder of 4 (bilinear x2 + conv) stages; final conv to 3 channels, no activation. DRAEM: w = 128.
* `DiscriminativeSubNetwork` S: U-Net on the 6-channel (reconstruction, input) pair; widths
  w, 2w, 4w, 8w, 8w, 8w with 5 max-pools (input sides must be multiples of 32), skip concatenation at each
  scale, final conv to 2 logits. DRAEM: w = 64.
* `draem_init`: conv weights N(0, 0.02), BatchNorm weight N(1, 0.02) and bias 0 (`train_DRAEM.weights_init`;
  anomalib omits it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STRIDE = 32  # S pools 5 times


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _double(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *_conv_bn_relu(cin, cout))


def _two(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*_conv_bn_relu(cin, mid), *_conv_bn_relu(mid, cout))


class EncoderReconstructive(nn.Module):
    def __init__(self, in_channels: int, w: int) -> None:
        super().__init__()
        self.block1, self.mp1 = _double(in_channels, w), nn.MaxPool2d(2)
        self.block2, self.mp2 = _double(w, 2 * w), nn.MaxPool2d(2)
        self.block3, self.mp3 = _double(2 * w, 4 * w), nn.MaxPool2d(2)
        self.block4, self.mp4 = _double(4 * w, 8 * w), nn.MaxPool2d(2)
        self.block5 = _double(8 * w, 8 * w)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mp1(self.block1(x))
        x = self.mp2(self.block2(x))
        x = self.mp3(self.block3(x))
        x = self.mp4(self.block4(x))
        return self.block5(x)


class DecoderReconstructive(nn.Module):
    def __init__(self, w: int, out_channels: int) -> None:
        super().__init__()
        self.up1, self.db1 = _up(8 * w, 8 * w), _two(8 * w, 8 * w, 4 * w)
        self.up2, self.db2 = _up(4 * w, 4 * w), _two(4 * w, 4 * w, 2 * w)
        self.up3, self.db3 = _up(2 * w, 2 * w), _two(2 * w, 2 * w, w)
        self.up4, self.db4 = _up(w, w), _two(w, w, w)
        self.fin_out = nn.Sequential(nn.Conv2d(w, out_channels, 3, padding=1))

    def forward(self, b5: Tensor) -> Tensor:
        x = self.db1(self.up1(b5))
        x = self.db2(self.up2(x))
        x = self.db3(self.up3(x))
        return self.fin_out(self.db4(self.up4(x)))


class ReconstructiveSubNetwork(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_width: int = 128) -> None:
        super().__init__()
        self.encoder = EncoderReconstructive(in_channels, base_width)
        self.decoder = DecoderReconstructive(base_width, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class EncoderDiscriminative(nn.Module):
    def __init__(self, in_channels: int, w: int) -> None:
        super().__init__()
        self.block1, self.mp1 = _double(in_channels, w), nn.MaxPool2d(2)
        self.block2, self.mp2 = _double(w, 2 * w), nn.MaxPool2d(2)
        self.block3, self.mp3 = _double(2 * w, 4 * w), nn.MaxPool2d(2)
        self.block4, self.mp4 = _double(4 * w, 8 * w), nn.MaxPool2d(2)
        self.block5, self.mp5 = _double(8 * w, 8 * w), nn.MaxPool2d(2)
        self.block6 = _double(8 * w, 8 * w)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        b1 = self.block1(x)
        b2 = self.block2(self.mp1(b1))
        b3 = self.block3(self.mp2(b2))
        b4 = self.block4(self.mp3(b3))
        b5 = self.block5(self.mp4(b4))
        b6 = self.block6(self.mp5(b5))
        return b1, b2, b3, b4, b5, b6


class DecoderDiscriminative(nn.Module):
    def __init__(self, w: int, out_channels: int) -> None:
        super().__init__()
        self.up_b, self.db_b = _up(8 * w, 8 * w), _two(16 * w, 8 * w, 8 * w)
        self.up1, self.db1 = _up(8 * w, 4 * w), _two(12 * w, 4 * w, 4 * w)
        self.up2, self.db2 = _up(4 * w, 2 * w), _two(6 * w, 2 * w, 2 * w)
        self.up3, self.db3 = _up(2 * w, w), _two(3 * w, w, w)
        self.up4, self.db4 = _up(w, w), _two(2 * w, w, w)
        self.fin_out = nn.Sequential(nn.Conv2d(w, out_channels, 3, padding=1))

    def forward(self, b1: Tensor, b2: Tensor, b3: Tensor, b4: Tensor, b5: Tensor, b6: Tensor) -> Tensor:
        x = self.db_b(torch.cat((self.up_b(b6), b5), 1))
        x = self.db1(torch.cat((self.up1(x), b4), 1))
        x = self.db2(torch.cat((self.up2(x), b3), 1))
        x = self.db3(torch.cat((self.up3(x), b2), 1))
        x = self.db4(torch.cat((self.up4(x), b1), 1))
        return self.fin_out(x)


class DiscriminativeSubNetwork(nn.Module):
    def __init__(self, in_channels: int = 6, out_channels: int = 2, base_width: int = 64) -> None:
        super().__init__()
        self.encoder_segment = EncoderDiscriminative(in_channels, base_width)
        self.decoder_segment = DecoderDiscriminative(base_width, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder_segment(*self.encoder_segment(x))


def draem_init(module: nn.Module) -> None:
    """DRAEM's `weights_init`, applied with `net.apply(draem_init)`."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def pair_input(reconstruction: Tensor, image: Tensor, reconstruction_first: bool) -> Tensor:
    """S's 6-channel input. DRAEM: (reconstruction, image); anomalib: (image, reconstruction)."""
    return torch.cat((reconstruction, image) if reconstruction_first else (image, reconstruction), 1)


def image_score(anomaly_map: Tensor, filter_size: int) -> Tensor:
    """(B, H, W) -> (B,): max of the `filter_size` mean-filtered map (DRAEM), or the plain max when 1."""
    if filter_size <= 1:
        return anomaly_map.flatten(1).amax(1)
    smooth = F.avg_pool2d(anomaly_map[:, None], filter_size, stride=1, padding=filter_size // 2)
    return smooth.flatten(1).amax(1)


class DraemDetector(nn.Module):
    """R and S together: images (B, 3, H, W) in [0, 1] -> (anomaly map (B, H, W), image score (B,))."""

    def __init__(self, recon_width: int = 128, disc_width: int = 64, score_filter_size: int = 21,
                 reconstruction_first: bool = True) -> None:
        super().__init__()
        self.reconstructive = ReconstructiveSubNetwork(base_width=recon_width)
        self.discriminative = DiscriminativeSubNetwork(base_width=disc_width)
        self.score_filter_size = score_filter_size
        self.reconstruction_first = reconstruction_first

    def segment(self, reconstruction: Tensor, image: Tensor) -> Tensor:
        return self.discriminative(pair_input(reconstruction, image, self.reconstruction_first))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.segment(self.reconstructive(images), images)
        anomaly_map = logits.softmax(1)[:, 1]
        return anomaly_map, image_score(anomaly_map, self.score_filter_size)


def build_detector(recon_width: int = 128, disc_width: int = 64, score_filter_size: int = 21,
                   reconstruction_first: bool = True) -> DraemDetector:
    """The exported network (export_meta.yaml names this builder), with DRAEM's init."""
    net = DraemDetector(recon_width, disc_width, score_filter_size, reconstruction_first)
    net.apply(draem_init)
    return net
