"""MVTec layout reading, the parity split, the procedural set, and every bad input as one clear line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import train_cli
from datamodules.anomaly_aug_mvtec import (
    MVTecDataConfig,
    MVTecDataModule,
    ProceduralSetConfig,
    load_mask,
    parity_split,
    scan_category,
)
from datamodules.anomaly_aug_synthetic import DEFECTS, generate
from tenfold.errors import DataError


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("mvtec") / "set", size=32, n_train=7, n_test_good=3, n_per_defect=2)


@pytest.fixture
def copy(small_set: Path, tmp_path: Path) -> Path:
    shutil.copytree(small_set, tmp_path / "set")
    return tmp_path / "set"


def test_layout_pairs_masks_by_exact_stem(small_set: Path) -> None:
    files = scan_category(str(small_set), "disc")
    assert files.defects == sorted(DEFECTS["disc"]) and len(files.train) == 7
    for item in files.test:
        if item.defect is None:
            assert item.mask is None and item.image.parent.name == "good"
        else:
            assert item.mask.name == f"{item.image.stem}_mask.png" and item.mask.parent.name == item.defect


def test_parity_split_is_disjoint_even_odd_and_covers_all() -> None:
    a, b = parity_split(7)
    assert a == [0, 2, 4, 6] and b == [1, 3, 5] and not set(a) & set(b) and sorted(a + b) == list(range(7))


def test_datamodule_serves_paired_halves_and_the_test_split(small_set: Path) -> None:
    dm = MVTecDataModule(MVTecDataConfig(root=str(small_set), category="stripes", image_size=32,
                                         batch_size_per_device=2, num_workers=0))
    dm.check()
    dm.setup("fit")
    assert dm.half_a.ids == [0, 2, 4, 6] and dm.half_b.ids == [1, 3, 5]
    batch = next(iter(dm.train_dataloader()))
    batch = batch[0] if isinstance(batch, tuple) else batch
    (xa, ida), (_, idb) = batch["a"], batch["b"]
    assert xa.shape == (2, 3, 32, 32) and set(ida.tolist()) <= {0, 2, 4, 6} and set(idb.tolist()) <= {1, 3, 5}
    sample = dm.test_set[len(dm.test_set) - 1]
    assert 0 <= sample["image"].min() and sample["image"].max() <= 1 and sample["label"] == 1
    assert set(sample["mask"].unique().tolist()) <= {0, 1} and sample["mask"].sum() > 0
    assert dm.module_kwargs() == {"defect_names": sorted(DEFECTS["stripes"]), "category": "stripes"}


def test_masks_resize_with_nearest_neighbours(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:31] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    small = load_mask(tmp_path / "m.png", 32)
    assert set(small.unique().tolist()) == {0, 1} and int(small.sum()) == 10 * 10  # centres of the 2x2 cells


def test_procedural_set_goes_to_the_cache_and_is_deterministic(tmp_path: Path) -> None:
    cfg = MVTecDataConfig(procedural=ProceduralSetConfig(enabled=True, size=32, n_train=4, n_test_good=2,
                                                         n_per_defect=1, cache_dir=str(tmp_path / "c")),
                          category="disc", image_size=32, num_workers=0)
    dm = MVTecDataModule(cfg)
    dm.check()
    assert Path(dm.root).is_relative_to(tmp_path / "c")
    other = generate(tmp_path / "again", size=32, n_train=4, n_test_good=2, n_per_defect=1)
    for path in (Path(dm.root) / "disc" / "test" / "crack").iterdir():
        twin = other / "disc" / "test" / "crack" / path.name
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(twin)))


# ---- bad inputs: each one clear line


def _raises(root: Path, category: str, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        scan_category(str(root), category)
    assert "\n" not in str(info.value)


def test_missing_root_and_category(tmp_path: Path, small_set: Path) -> None:
    _raises(tmp_path / "nowhere", "disc", "data.root=.*no such folder")
    _raises(small_set, "bottle", r"data.category=bottle.*found under data.root: disc, stripes")


def test_defect_image_without_mask_and_orphan_mask(copy: Path) -> None:
    (copy / "disc/ground_truth/crack/000_mask.png").rename(copy / "disc/ground_truth/crack/009_mask.png")
    with pytest.raises(DataError, match="000.png: no mask"):
        scan_category(str(copy), "disc")
    shutil.copy(copy / "disc/test/crack/001.png", copy / "disc/test/crack/000.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(copy / "disc/ground_truth/crack/000_mask.png")
    _raises(copy, "disc", "009_mask.png: a mask without its image")


def test_mask_size_mismatch(copy: Path) -> None:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(copy / "disc/ground_truth/spot/001_mask.png")
    _raises(copy, "disc", "mask size 16x16 differs")


def test_non_binary_mask_and_grey_or_rgba_images_are_converted_with_a_warning(copy: Path) -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[5:10, 5:10] = 200
    mask[5:7, 5:7] = 90
    Image.fromarray(mask).save(copy / "disc/ground_truth/spot/000_mask.png")
    Image.open(copy / "disc/train/good/000.png").convert("L").save(copy / "disc/train/good/000.png")
    Image.open(copy / "disc/train/good/001.png").convert("RGBA").save(copy / "disc/train/good/001.png")
    with pytest.warns(UserWarning) as record:
        scan_category(str(copy), "disc")
    messages = [str(w.message) for w in record]
    assert any("2 image(s) are not RGB" in m for m in messages)
    assert any("not binary" in m and "thresholded at 128" in m for m in messages)
    assert int(load_mask(copy / "disc/ground_truth/spot/000_mask.png", 32).sum()) == 25 - 4


def test_test_split_without_anomalies_or_without_normals(copy: Path) -> None:
    shutil.rmtree(copy / "disc/test/good")
    _raises(copy, "disc", "no normal test images")
    for defect in DEFECTS["stripes"]:
        shutil.rmtree(copy / "stripes/test" / defect)
    _raises(copy, "stripes", "no defect folders")


def test_unreadable_image(copy: Path) -> None:
    (copy / "disc/test/good/001.png").write_bytes(b"\x89PNG broken")
    _raises(copy, "disc", "001.png cannot be read as an image")


def test_cli_errors_are_one_line_exit_2(tmp_path: Path, small_set: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--config", "configs/anomaly_aug.yaml"], "data.root is not set"),
        (["--config", "configs/anomaly_aug.yaml", f"data.root={small_set}", "data.category=disc",
          "data.image_size=48"], "data.image_size=48 is not a multiple of 32"),
        (["--config", "configs/demo/anomaly_aug.yaml", "model.simulation.transparent_beta=[0.5,1.5]",
          f"data.procedural.cache_dir={tmp_path}/c"], "transparent_beta=.*0 < low <= high <= 1"),
        (["--config", "configs/anomaly_aug.yaml", f"data.root={small_set}", "data.category=disc",
          "data.image_size=32", f"data.anomaly_source_dir={empty}"], "no .jpg"),
    ]
    for args, match in cases:
        assert train_cli(*args, f"run.root={tmp_path}/runs", "logger=none", "trainer.fast_dev_run=true") == 2
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("error:")]
        assert len(errors) == 1, err
        assert re.search(match, errors[0]), errors[0]
