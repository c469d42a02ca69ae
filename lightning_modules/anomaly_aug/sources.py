"""External anomaly sources, preloaded once into one (N, 3, S, S) tensor (anomalib reads one file per sample).

* bundled (offline, nothing downloaded): scikit-image's real textures (brick, grass, gravel) and photos,
  scikit-learn's two photos, each as a centre square and four quadrant crops, plus Perlin colour noise;
* an optional folder in DTD layout (`<dir>/images/<category>/*.jpg`, any depth is searched), used only
  when given, never downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from lightning_modules.anomaly_aug.simulate import perlin_noise
from tenfold.errors import DataError

SKIMAGE_TEXTURES = ("brick", "grass", "gravel")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "camera", "coins")
SOURCE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _to_tensor(array: np.ndarray) -> Tensor:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return torch.from_numpy(np.array(array[..., :3])).permute(2, 0, 1).float() / 255


def _crops(image: Tensor, size: int) -> list[Tensor]:
    """Centre square and four quadrant squares, each resized to `size`."""
    _, h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    squares = [image[:, top:top + side, left:left + side]]
    half = side // 2
    squares += [image[:, top + y:top + y + half, left + x:left + x + half] for y in (0, half) for x in (0, half)]
    return [F.interpolate(s[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
            for s in squares]


def bundled_sources(size: int, noise_images: int = 8, seed: int = 0) -> Tensor:
    import skimage.data
    from sklearn.datasets import load_sample_images

    images = [_to_tensor(getattr(skimage.data, name)()) for name in SKIMAGE_TEXTURES + SKIMAGE_PHOTOS]
    images += [_to_tensor(im) for im in load_sample_images().images]
    crops = [c for im in images for c in _crops(im, size)]
    g = torch.Generator().manual_seed(seed)
    noise = perlin_noise(3 * noise_images, size, size, g, torch.device("cpu")).view(noise_images, 3, size, size)
    crops += list((noise + 1) / 2)
    return torch.stack(crops).clamp(0, 1)


def source_files(root: str) -> list[Path]:
    """The image files of a DTD-layout folder (searched at any depth), sorted; an error if there are none."""
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"data.anomaly_source_dir={root}: no such folder (point it at a DTD-layout folder, "
                        "e.g. dtd/images, or unset it to use the bundled sources)")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SOURCE_SUFFIXES)
    if not files:
        raise DataError(f"data.anomaly_source_dir={root}: no {'/'.join(SOURCE_SUFFIXES)} images found in it "
                        "(a DTD-layout folder holds images/<category>/*.jpg)")
    return files


def folder_sources(root: str, size: int, limit: int) -> Tensor:
    """Every image under `root` (sorted; at most `limit`, evenly spaced), resized to `size` x `size`."""
    files = source_files(root)
    if len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).round().astype(int)]
    out = []
    for path in files:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"anomaly source {path} cannot be read as an image ({exc}); remove or replace it") from None
        out.append(_to_tensor(np.asarray(im)))
    return torch.stack(out)


def load_sources(size: int, source_dir: str | None, bundled: bool, limit: int) -> Tensor:
    parts = []
    if source_dir:
        parts.append(folder_sources(source_dir, size, limit))
    if bundled or not parts:
        parts.append(bundled_sources(size))
    return torch.cat(parts)
