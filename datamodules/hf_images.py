"""Hugging Face `datasets` images: a hub dataset, or a local imagefolder / parquet directory."""

from __future__ import annotations

import os
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from tenfold.errors import DataError


def set_offline(offline: bool, cache_dir: str | None) -> None:
    """HF reads these variables at import time, so call this before `import datasets`."""
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if cache_dir:
        os.environ.setdefault("HF_DATASETS_CACHE", cache_dir)


def load_hf_split(name: str, root: str | None, split: str, cache_dir: str | None) -> Any:
    import datasets

    if name in ("imagefolder", "parquet") and not (root and os.path.isdir(root)):
        raise DataError(f"data.hf_name={name} reads a local folder: set data.root to it (got {root!r})")
    try:
        return datasets.load_dataset(name, data_dir=root, split=split, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError, ConnectionError) as exc:
        first = str(exc).splitlines()[0]
        raise DataError(
            f"cannot load split '{split}' of HF dataset '{name}' (data_dir={root}): {first}. Check "
            "data.hf_name / data.root / data.<split>_split; set data.offline=false to allow downloads"
        ) from None


class HFImageDataset(Dataset):
    """(PIL RGB image, int label) pairs from an HF dataset with image and label columns."""

    def __init__(self, hf_split: Any, image_column: str, label_column: str, classes: list | None = None) -> None:
        """`classes`: the train split's, for the other splits; without it a plain label column's class list
        is this split's own, and a split missing one class would shift every later label."""
        missing = {image_column, label_column} - set(hf_split.column_names)
        if missing:
            raise DataError(
                f"HF dataset has no column(s) {sorted(missing)}; its columns are "
                f"{hf_split.column_names}: set data.image_column / data.label_column"
            )
        if len(hf_split) == 0:
            raise DataError("HF dataset split is empty")
        self.rows = hf_split
        self.image_column = image_column
        self.label_column = label_column
        names = getattr(hf_split.features[label_column], "names", None)
        if names:  # a ClassLabel column stores indices into names shared by every split
            self.classes, self._index = list(names), None
            return
        # A plain (string) column is mapped to sorted class names.
        present = sorted(set(hf_split[label_column]))
        self.classes = present if classes is None else list(classes)
        unknown = sorted(set(present) - set(self.classes))
        if unknown:
            raise DataError(
                f"HF dataset column '{label_column}' has labels {unknown[:10]} that the train split does not; "
                "every evaluation class needs training examples"
            )
        self._index = {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        row = self.rows[index]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):
            raise DataError(f"row {index}: column '{self.image_column}' is not an image")
        label = row[self.label_column]
        return image.convert("RGB"), int(self._index[label] if self._index else label)
