"""The three image sources give the same (image tensor, label) batches and fixed, shardable splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.digits import digit_images
from datamodules.hf_images import HFImageDataset
from datamodules.image_classification import DataSource, ImageClassificationDataConfig, ImageClassificationDataModule
from tenfold.errors import DataError


def _config(**kw) -> ImageClassificationDataConfig:
    cfg = ImageClassificationDataConfig(image_size=32, crop_pct=1.0, batch_size_per_device=4, num_workers=0, **kw)
    cfg.augment.auto_augment = None
    return cfg


def test_digits_split_is_fixed_stratified_and_disjoint() -> None:
    a, b = digit_images(0), digit_images(0)
    assert {k: len(v) for k, v in a.items()} == {"train": 1257, "val": 270, "test": 270}
    for split in a:
        assert [lbl for _, lbl in a[split]] == [lbl for _, lbl in b[split]]
    counts = np.bincount([lbl for _, lbl in a["test"]], minlength=10)
    assert counts.min() >= 25  # stratified: every digit is in the test split
    train_pixels = {np.asarray(img).tobytes() for img, _ in a["train"]}
    assert not any(np.asarray(img).tobytes() in train_pixels for img, _ in a["test"][:50])


def test_digits_batches_have_the_configured_shape() -> None:
    dm = ImageClassificationDataModule(_config())
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and dm.class_names == [str(d) for d in range(10)]


def test_image_folder_source(image_folder: Path) -> None:
    dm = ImageClassificationDataModule(_config(source=DataSource.imagefolder, root=str(image_folder)))
    dm.check()
    assert dm.class_names == ["bars", "dots", "plain"]
    dm.setup("test")
    images, labels = next(iter(dm.test_dataloader()))
    assert images.shape == (4, 3, 32, 32) and set(labels.tolist()) <= {0, 1, 2}


def test_hf_local_imagefolder_source(image_folder: Path, tmp_path: Path) -> None:
    cfg = _config(source=DataSource.hf, hf_name="imagefolder", root=str(image_folder),
                  cache_dir=str(tmp_path / "hf-cache"), val_split="validation", test_split="test")
    dm = ImageClassificationDataModule(cfg)
    dm.check()
    assert dm.class_names == ["bars", "dots", "plain"]
    dm.setup("fit")
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.dtype == torch.int64
    assert len(dm.val_set) == 12


def test_hf_source_needs_a_name() -> None:
    with pytest.raises(DataError, match="data.hf_name"):
        ImageClassificationDataModule(_config(source=DataSource.hf)).check()


def test_imagefolder_needs_a_root() -> None:
    with pytest.raises(DataError, match="data.root"):
        ImageClassificationDataModule(_config(source=DataSource.imagefolder)).check()


def test_eval_split_missing_a_class_keeps_train_labels(image_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(image_folder, root)
    shutil.rmtree(root / "test" / "dots")  # ImageFolder alone would relabel 'plain' from 2 to 1
    dm = ImageClassificationDataModule(_config(source=DataSource.imagefolder, root=str(root), test_split="test"))
    dm.setup("test")
    folder = dm.test_set.pairs
    assert folder.classes == ["bars", "dots", "plain"] and sorted(set(folder.targets)) == [0, 2]
    assert all(folder.classes[t] == Path(p).parent.name for p, t in folder.samples)


def test_eval_split_with_an_unknown_class_is_a_data_error(image_folder: Path, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    shutil.copytree(image_folder, root)
    shutil.copytree(root / "test" / "dots", root / "test" / "stripes")
    dm = ImageClassificationDataModule(_config(source=DataSource.imagefolder, root=str(root), test_split="test"))
    with pytest.raises(DataError, match=r"\['stripes'\] are not in the train split"):
        dm.setup("test")


def test_hf_string_labels_follow_the_train_classes() -> None:
    image = Image.new("RGB", (8, 8))
    split = datasets.Dataset.from_dict({"image": [image, image], "label": ["cat", "owl"]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label": datasets.Value("string")}))
    labels = [label for _, label in HFImageDataset(split, "image", "label", classes=["cat", "dog", "owl"])]
    assert labels == [0, 2]
    with pytest.raises(DataError, match="owl"):
        HFImageDataset(split, "image", "label", classes=["cat", "dog"])
