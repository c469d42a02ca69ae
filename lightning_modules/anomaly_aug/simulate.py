"""Anomaly simulation (Lin & Yan 2023, section "comprehensive augmentation"), batched on tensors, pure torch.

A batch of normal images (B, 3, H, W) in [0, 1] becomes (augmented images, masks, family per sample):

* with probability `p_clean` (0.5, as DRAEM) a sample stays clean: bit-identical image, all-zero mask;
* otherwise one family is drawn uniformly from those the class's row of the operation table enables:
    - `transparent`: external source A blended inside a Perlin mask M with opacity beta in (0, 1):
          I_a = (1 - M) I + M ((1 - beta) I + beta A)                          (paper, "transparent")
    - `opaque`:      the region is replaced, I_a = (1 - M) I + M A (beta = 1)      (paper, "opaque")
    - `ndaa`:        near-distribution anomaly: A is another normal image of the batch (same class) or the
                     same image shifted, with mild brightness jitter, pasted opaque or transparent
    - `class_op`:    one of the class's own operations (colour shift, local rotation/flip, blur, local
                     scale), applied to I and pasted through M; which ones a class may use is the table's
                     business (a rotated part is a defect for transistor, normal for hazelnut).
* there is no global rotation of normal images (the paper drops DRAEM's; `draem_simulation` keeps it as the
  baseline).

beta semantics: here (and in the paper's formula) beta is the *opacity of the anomaly*. DRAEM's code draws
`beta = rand * 0.8` as the weight of the *original* image (anomaly opacity 1 - beta in (0.2, 1]); anomalib
draws the anomaly opacity in (0.1, 1). `draem_simulation` reproduces DRAEM's (0.2, 1] opacity.

Blends use `torch.where(mask, ..., image)`, so pixels outside the mask are bit-identical to the input.
Randomness comes only from the `torch.Generator` passed in (see `stream_seed`: one stream per seed, rank,
worker, epoch and step), so two DDP ranks never draw the same masks and a resumed run draws the same ones.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass

import kornia.enhance
import torch
import torch.nn.functional as F
from torch import Tensor


class Family(enum.Enum):
    """What produced a sample; its position in this list is the code logged per sample."""

    clean = "clean"
    transparent = "transparent"
    opaque = "opaque"
    ndaa = "ndaa"
    class_op = "class_op"
    draem = "draem"  # DRAEM's original simulation (baseline)


class ClassOp(enum.Enum):
    """Class-conditional operations (digest section 2.2); a class enables only those anomalous for it."""

    color_shift = "color_shift"
    local_rotation = "local_rotation"
    local_flip = "local_flip"
    blur = "blur"
    local_scale = "local_scale"


FAMILY_CODES = {f: i for i, f in enumerate(Family)}
ORIENTATION_OPS = (ClassOp.local_rotation, ClassOp.local_flip)
COLOUR_OPS = (ClassOp.color_shift,)


def stream_seed(seed: int, rank: int, worker: int, epoch: int, step: int) -> int:
    """A 63-bit seed, different for every (seed, rank, worker, epoch, step)."""
    digest = hashlib.blake2b(f"{seed}/{rank}/{worker}/{epoch}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _uniform(n: int, low: float, high: float, g: torch.Generator, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=device)


# --------------------------------------------------------------------------------------------------
# Perlin masks (DRAEM's perlin.py, batched)


def _fade(t: Tensor) -> Tensor:
    return ((6 * t - 15) * t + 10) * t * t * t


def perlin_noise(batch: int, height: int, width: int, g: torch.Generator, device: torch.device,
                 min_exp: int = 0, max_exp: int = 5) -> Tensor:
    """(B, H, W) 2-D gradient noise in [-1, 1]; lattice cells per axis 2^a, a uniform in {min_exp..max_exp}.

    Generated on the next power-of-two square (every lattice divides it) and cropped, so any H, W works
    (the anomalib fix for non-power-of-two sizes). Each sample has its own scales and gradients.
    """
    size = 1 << max(height - 1, width - 1, 1).bit_length()
    cells = 1 << max_exp
    ey = torch.randint(min_exp, max_exp + 1, (batch,), generator=g, device=device)
    ex = torch.randint(min_exp, max_exp + 1, (batch,), generator=g, device=device)
    angles = 2 * math.pi * torch.rand(batch, cells + 1, cells + 1, generator=g, device=device)
    gradients = torch.stack((torch.sin(angles), torch.cos(angles)), -1).view(-1, 2)  # (gy, gx) per lattice point
    pos = torch.arange(size, device=device, dtype=torch.float32) / size
    uy = pos[None, :] * (1 << ey)[:, None].float()  # (B, S) in lattice units
    ux = pos[None, :] * (1 << ex)[:, None].float()
    iy, ix = uy.floor().long(), ux.floor().long()
    fy, fx = (uy - iy)[:, :, None], (ux - ix)[:, None, :]  # (B, S, 1), (B, 1, S)
    base = (torch.arange(batch, device=device) * (cells + 1) ** 2)[:, None, None]

    def corner(dy: int, dx: int) -> Tensor:
        index = base + (iy[:, :, None] + dy) * (cells + 1) + (ix[:, None, :] + dx)
        grad = gradients[index]  # (B, S, S, 2)
        return grad[..., 0] * (fy - dy) + grad[..., 1] * (fx - dx)

    ty, tx = _fade(fy), _fade(fx)
    top = torch.lerp(corner(0, 0), corner(0, 1), tx)
    bottom = torch.lerp(corner(1, 0), corner(1, 1), tx)
    noise = math.sqrt(2) * torch.lerp(top, bottom, ty)
    return noise[:, :height, :width]


def rotate(images: Tensor, degrees: Tensor, padding: str = "zeros", mode: str = "bilinear") -> Tensor:
    """Rotate each image (B, C, H, W) by its own angle about the centre (aspect-correct)."""
    b, _, h, w = images.shape
    rad = degrees * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack((torch.stack((cos, -sin * h / w, zero), -1), torch.stack((sin * w / h, cos, zero), -1)), 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding, align_corners=False)


def perlin_masks(batch: int, height: int, width: int, g: torch.Generator, device: torch.device,
                 threshold: float = 0.5, max_tries: int = 10) -> tuple[Tensor, int]:
    """(B, 1, H, W) binary masks: Perlin noise rotated in [-90, 90] degrees, then thresholded.

    The threshold comes after the rotation, so the mask stays binary; the rotation's zero fill keeps the
    corners out of the mask (as DRAEM's imgaug Affine). Empty masks are redrawn, at most `max_tries` times
    in all; masks still empty then stay empty (the caller makes those samples clean). Returns the masks
    and the number of redraws.
    """
    masks = torch.zeros(batch, 1, height, width, device=device)
    todo = torch.arange(batch, device=device)
    redraws = 0
    for attempt in range(max_tries):
        noise = perlin_noise(len(todo), height, width, g, device)[:, None]
        angles = _uniform(len(todo), -90.0, 90.0, g, device)
        masks[todo] = (rotate(noise, angles) > threshold).float()
        empty = masks[todo].flatten(1).sum(1) == 0
        todo = todo[empty]
        if len(todo) == 0:
            break
        redraws += len(todo) if attempt + 1 < max_tries else 0
    return masks, redraws


# --------------------------------------------------------------------------------------------------
# Recolouring of external sources (DRAEM's 10 imgaug ops, rebuilt on tensors; 3 distinct ones per sample)


def _gamma(x: Tensor, g: torch.Generator) -> Tensor:
    gamma = 0.5 + 1.5 * torch.rand(x.shape[0], x.shape[1], 1, 1, generator=g, device=x.device)
    return x.clamp_min(0).pow(gamma)


def _brightness(x: Tensor, g: torch.Generator) -> Tensor:
    n = x.shape[0]
    mul = _uniform(n, 0.8, 1.2, g, x.device)[:, None, None, None]
    add = _uniform(n, -30 / 255, 30 / 255, g, x.device)[:, None, None, None]
    return (x * mul + add).clamp(0, 1)


def _sharpness(x: Tensor, g: torch.Generator) -> Tensor:
    amount = _uniform(x.shape[0], 0.0, 2.0, g, x.device)[:, None, None, None]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (x + amount * (x - blurred)).clamp(0, 1)


def _hue_saturation(x: Tensor, g: torch.Generator) -> Tensor:
    n = x.shape[0]
    hue = _uniform(n, -50 / 180 * math.pi, 50 / 180 * math.pi, g, x.device)
    sat = _uniform(n, 0.5, 1.5, g, x.device)
    return kornia.enhance.adjust_saturation(kornia.enhance.adjust_hue(x, hue), sat).clamp(0, 1)


def _solarize(x: Tensor, g: torch.Generator) -> Tensor:
    # A new threshold for every sample and call (anomalib draws it once, at construction).
    threshold = _uniform(x.shape[0], 32 / 255, 128 / 255, g, x.device)[:, None, None, None]
    return torch.where(x >= threshold, 1 - x, x)


def _posterize(x: Tensor, g: torch.Generator) -> Tensor:
    bits = torch.randint(4, 9, (x.shape[0],), generator=g, device=x.device)
    step = (2.0 ** (8 - bits)).float()[:, None, None, None]
    return torch.floor(x * 255 / step) * step / 255


def _invert(x: Tensor, g: torch.Generator) -> Tensor:
    return 1 - x


def _autocontrast(x: Tensor, g: torch.Generator) -> Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    return torch.where(high > low, (x - low) / (high - low).clamp_min(1e-6), x)


def _equalize(x: Tensor, g: torch.Generator) -> Tensor:
    return kornia.enhance.equalize(x.clamp(0, 1))


def _rotate45(x: Tensor, g: torch.Generator) -> Tensor:
    return rotate(x, _uniform(x.shape[0], -45.0, 45.0, g, x.device), padding="reflection")


RECOLOUR_OPS = (_gamma, _brightness, _sharpness, _hue_saturation, _solarize, _posterize, _invert,
                _autocontrast, _equalize, _rotate45)


def recolour(x: Tensor, g: torch.Generator, n_ops: int = 3) -> Tensor:
    """Apply `n_ops` distinct ops (per sample) from RECOLOUR_OPS, in the list's order."""
    order = torch.rand(x.shape[0], len(RECOLOUR_OPS), generator=g, device=x.device).argsort(1)
    chosen = torch.zeros(x.shape[0], len(RECOLOUR_OPS), dtype=torch.bool, device=x.device)
    chosen.scatter_(1, order[:, :n_ops], True)
    for k, op in enumerate(RECOLOUR_OPS):
        rows = chosen[:, k].nonzero().flatten()
        if len(rows):
            x = x.index_copy(0, rows, op(x[rows], g))
    return x


def random_view(sources: Tensor, index: Tensor, g: torch.Generator, zoom: tuple[float, float] = (1.0, 2.0)) -> Tensor:
    """A random zoomed-in, shifted, possibly mirrored view of each chosen source (B, 3, H, W)."""
    n = len(index)
    device = sources.device
    scale = 1 / _uniform(n, zoom[0], zoom[1], g, device)
    flip = torch.where(torch.rand(n, generator=g, device=device) < 0.5, -1.0, 1.0)
    tx = (1 - scale) * (2 * torch.rand(n, generator=g, device=device) - 1)
    ty = (1 - scale) * (2 * torch.rand(n, generator=g, device=device) - 1)
    zero = torch.zeros_like(scale)
    theta = torch.stack((torch.stack((scale * flip, zero, tx), -1), torch.stack((zero, scale, ty), -1)), 1)
    picked = sources[index]
    grid = F.affine_grid(theta, list(picked.shape), align_corners=False)
    return F.grid_sample(picked, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# --------------------------------------------------------------------------------------------------
# The framework


@dataclass
class SimulatedBatch:
    images: Tensor  # (B, 3, H, W) augmented
    masks: Tensor  # (B, 1, H, W) in {0, 1}
    labels: Tensor  # (B,) 1 where the mask is non-empty
    family: Tensor  # (B,) long, FAMILY_CODES
    sources: Tensor  # (B, 3, H, W) what was pasted (the input image itself for clean samples)
    beta: Tensor  # (B,) opacity used (1 for opaque and class ops, 0 for clean)
    redraws: int  # empty Perlin masks redrawn


def blend(images: Tensor, sources: Tensor, masks: Tensor, beta: Tensor) -> Tensor:
    """I_a = (1 - M) I + M ((1 - beta) I + beta A); beta = 1 pastes A exactly, pixels outside M untouched."""
    b = beta.view(-1, 1, 1, 1)
    inside = torch.where(b >= 1, sources, (1 - b) * images + b * sources)
    return torch.where(masks > 0, inside, images)


def check_beta_range(name: str, low: float, high: float) -> None:
    from tenfold.errors import ConfigError

    if not (0 < low <= high <= 1):
        raise ConfigError(f"{name}=[{low}, {high}]: the opacity beta must satisfy 0 < low <= high <= 1 "
                          "(beta is the anomaly's opacity; 1 = opaque)")


class AnomalySimulator:
    """The paper's framework for one class: `simulate(images, g)` (see the module docstring)."""

    def __init__(self, sources: Tensor, class_ops: list[ClassOp], p_clean: float = 0.5,
                 transparent_beta: tuple[float, float] = (0.2, 0.8), ndaa_beta: tuple[float, float] = (0.5, 1.0),
                 families: tuple[Family, ...] = (Family.transparent, Family.opaque, Family.ndaa, Family.class_op),
                 max_tries: int = 10) -> None:
        check_beta_range("model.simulation.transparent_beta", *transparent_beta)
        check_beta_range("model.simulation.ndaa_beta", *ndaa_beta)
        self.sources = sources  # (N, 3, H, W) preloaded external anomaly sources
        self.class_ops = list(class_ops)
        self.families = [f for f in families if f is not Family.class_op or self.class_ops]
        self.p_clean = p_clean
        self.transparent_beta = transparent_beta
        self.ndaa_beta = ndaa_beta
        self.max_tries = max_tries

    def simulate(self, images: Tensor, g: torch.Generator) -> SimulatedBatch:
        b, _, h, w = images.shape
        device = images.device
        family = torch.full((b,), FAMILY_CODES[Family.clean], dtype=torch.long, device=device)
        anomalous = torch.rand(b, generator=g, device=device) >= self.p_clean
        choice = torch.randint(len(self.families), (b,), generator=g, device=device)
        masks, redraws = perlin_masks(b, h, w, g, device, max_tries=self.max_tries)
        anomalous &= masks.flatten(1).sum(1) > 0
        masks = masks * anomalous.view(-1, 1, 1, 1)
        sources = images.clone()
        beta = torch.zeros(b, device=device)
        for k, fam in enumerate(self.families):
            rows = (anomalous & (choice == k)).nonzero().flatten()
            if len(rows) == 0:
                continue
            family[rows] = FAMILY_CODES[fam]
            src, opacity = self._source(fam, images, rows, g)
            sources[rows] = src
            beta[rows] = opacity
        out = blend(images, sources, masks, beta)
        return SimulatedBatch(out, masks, anomalous.long(), family, sources, beta, redraws)

    def _source(self, fam: Family, images: Tensor, rows: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        n, device = len(rows), images.device
        if fam in (Family.transparent, Family.opaque):
            index = torch.randint(len(self.sources), (n,), generator=g, device=device)
            src = recolour(random_view(self.sources, index, g), g)
            opacity = (_uniform(n, *self.transparent_beta, g, device) if fam is Family.transparent
                       else torch.ones(n, device=device))
            return src, opacity
        if fam is Family.ndaa:
            return self._near_distribution(images, rows, g)
        return self._class_op(images[rows], g), torch.ones(n, device=device)

    def _near_distribution(self, images: Tensor, rows: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """NDAA: same-class content. Another image of the batch, or this image shifted; mild jitter."""
        b, _, h, w = images.shape
        n, device = len(rows), images.device
        other = (rows + torch.randint(1, max(b, 2), (n,), generator=g, device=device)) % b
        use_self = (torch.rand(n, generator=g, device=device) < 0.5) | (other == rows)
        src = images[other].clone()
        own = use_self.nonzero().flatten()
        for i in own.tolist():  # a per-sample roll; cheap (views), the batch size at most
            dy = int(torch.randint(h // 8, h - h // 8, (1,), generator=g, device=device))
            dx = int(torch.randint(w // 8, w - w // 8, (1,), generator=g, device=device))
            src[i] = torch.roll(images[rows[i]], shifts=(dy, dx), dims=(1, 2))
        gain = _uniform(n, 0.9, 1.1, g, device).view(-1, 1, 1, 1)
        src = (src * gain).clamp(0, 1)
        opaque = torch.rand(n, generator=g, device=device) < 0.5
        opacity = torch.where(opaque, torch.ones(n, device=device), _uniform(n, *self.ndaa_beta, g, device))
        return src, opacity

    def _class_op(self, images: Tensor, g: torch.Generator) -> Tensor:
        n, device = images.shape[0], images.device
        pick = torch.randint(len(self.class_ops), (n,), generator=g, device=device)
        out = images.clone()
        for k, op in enumerate(self.class_ops):
            rows = (pick == k).nonzero().flatten()
            if len(rows):
                out[rows] = CLASS_OPS[op](images[rows], g)
        return out


def _color_shift(x: Tensor, g: torch.Generator) -> Tensor:
    n = x.shape[0]
    sign = torch.where(torch.rand(n, generator=g, device=x.device) < 0.5, -1.0, 1.0)
    hue = sign * _uniform(n, math.pi / 4, math.pi, g, x.device)
    sat = _uniform(n, 1.0, 2.0, g, x.device)
    return kornia.enhance.adjust_saturation(kornia.enhance.adjust_hue(x, hue), sat).clamp(0, 1)


def _local_rotation(x: Tensor, g: torch.Generator) -> Tensor:
    n = x.shape[0]
    sign = torch.where(torch.rand(n, generator=g, device=x.device) < 0.5, -1.0, 1.0)
    return rotate(x, sign * _uniform(n, 30.0, 180.0, g, x.device), padding="reflection")


def _local_flip(x: Tensor, g: torch.Generator) -> Tensor:
    vertical = (torch.rand(x.shape[0], generator=g, device=x.device) < 0.5).view(-1, 1, 1, 1)
    return torch.where(vertical, x.flip(2), x.flip(3))


def _blur(x: Tensor, g: torch.Generator) -> Tensor:
    k = max(3, (x.shape[-1] // 32) * 2 + 1)
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)


def _local_scale(x: Tensor, g: torch.Generator) -> Tensor:
    n = x.shape[0]
    sy = 1 / _uniform(n, 1.2, 1.6, g, x.device)
    sx = torch.where(torch.rand(n, generator=g, device=x.device) < 0.5, sy, 1 / sy)  # zoom or squeeze
    zero = torch.zeros_like(sy)
    theta = torch.stack((torch.stack((sx, zero, zero), -1), torch.stack((zero, sy, zero), -1)), 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


CLASS_OPS = {
    ClassOp.color_shift: _color_shift,
    ClassOp.local_rotation: _local_rotation,
    ClassOp.local_flip: _local_flip,
    ClassOp.blur: _blur,
    ClassOp.local_scale: _local_scale,
}


# --------------------------------------------------------------------------------------------------
# DRAEM's original simulation (the baseline the paper replaces)


def draem_simulation(images: Tensor, sources: Tensor, g: torch.Generator, p_clean: float = 0.5,
                     p_rotate: float = 0.3) -> tuple[Tensor, SimulatedBatch]:
    """DRAEM's `MVTecDRAEMTrainDataset`: the normal image is rotated in [-90, 90] with p=0.3 (black
    corners), then with p=0.5 a recoloured external source is blended through a Perlin mask with anomaly
    opacity in (0.2, 1]. Returns the (possibly rotated) normal images, which are R's targets, and the batch.
    """
    b, _, h, w = images.shape
    device = images.device
    rotated = torch.rand(b, generator=g, device=device) < p_rotate
    angles = torch.where(rotated, _uniform(b, -90.0, 90.0, g, device), torch.zeros(b, device=device))
    normal = torch.where(rotated.view(-1, 1, 1, 1), rotate(images, angles), images)
    anomalous = torch.rand(b, generator=g, device=device) >= p_clean
    masks, redraws = perlin_masks(b, h, w, g, device, max_tries=1)
    anomalous &= masks.flatten(1).sum(1) > 0  # DRAEM: an empty mask makes the sample normal
    masks = masks * anomalous.view(-1, 1, 1, 1)
    index = torch.randint(len(sources), (b,), generator=g, device=device)
    src = recolour(F.interpolate(sources[index], size=(h, w), mode="bilinear", align_corners=False), g)
    beta = torch.where(anomalous, 1 - 0.8 * torch.rand(b, generator=g, device=device), torch.zeros(b, device=device))
    out = blend(normal, src, masks, beta)
    family = torch.where(anomalous, FAMILY_CODES[Family.draem], FAMILY_CODES[Family.clean])
    return normal, SimulatedBatch(out, masks, anomalous.long(), family, src, beta, redraws)
