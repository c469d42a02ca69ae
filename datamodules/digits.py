"""The bundled default dataset: scikit-learn's real 8x8 handwritten digits (1,797 images, 10 classes).

It ships inside scikit-learn, so demos and tests run without any download. The train/val/test split is
fixed by its own seed (not the run seed), so every run and every rank sees the same split.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

CLASS_NAMES = [str(d) for d in range(10)]
# 270 each (15%): divisible by 2, 3, 5 and 6, so DDP shards need no padding duplicates.
VAL_SIZE = TEST_SIZE = 270


@lru_cache(maxsize=2)
def digit_images(split_seed: int = 0) -> dict[str, list[tuple[Image.Image, int]]]:
    """{"train", "val", "test"} -> [(RGB 8x8 PIL image, label)], stratified, 1257/270/270."""
    digits = load_digits()
    # Pixel values are counts 0..16; stretch them to the 8-bit range.
    pixels = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # (N, 8, 8)
    labels = digits.target
    index = np.arange(len(labels))
    train_idx, hold_idx = train_test_split(
        index, test_size=VAL_SIZE + TEST_SIZE, stratify=labels, random_state=split_seed
    )
    val_idx, test_idx = train_test_split(
        hold_idx, test_size=TEST_SIZE, stratify=labels[hold_idx], random_state=split_seed
    )

    def pairs(idx: np.ndarray) -> list[tuple[Image.Image, int]]:
        return [(Image.fromarray(pixels[i]).convert("RGB"), int(labels[i])) for i in idx]

    return {"train": pairs(train_idx), "val": pairs(val_idx), "test": pairs(test_idx)}
