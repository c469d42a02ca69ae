"""ssl_trajectory data: the rendered benchmark (deterministic, cached under a temp dir), the layout reader's
one-line errors, and training batches without labels."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.ssl_trajectory import PoseBenchmarkDataModule, PoseDataConfig, PoseDataSource, read_benchmark
from datamodules.ssl_trajectory_generate import GeneratorConfig, generate, refuse_symmetric
from lightning_modules.ssl_trajectory.poses import angle_deg, fibonacci_sphere
from tenfold.errors import ConfigError, DataError

TINY = dict(
    categories=["duck", "bunny"],
    ood_categories=["torus"],
    train_instances=2,
    val_instances=1,
    test_instances=1,
    ood_bank_instances=1,
    ood_test_instances=1,
    n_poses=8,
    n_ood_poses=6,
    render_size=32,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(GeneratorConfig(**TINY), str(tmp_path_factory.mktemp("bench-cache")))


def _digest(root: Path) -> str:
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.png")):
        h.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return h.hexdigest()


def test_layout_counts_and_labels(bench: Path) -> None:
    index = read_benchmark(bench, 32)
    assert index.categories == ["bunny", "duck"] and index.ood_categories == ["torus"] and index.n_poses == 8
    assert len(index.triplets) == 2 * 2 * 8  # categories x train instances x poses
    sizes = {name: len(views) for name, views in index.views.items()}
    assert sizes == {"bank": 32, "val": 16, "test": 16, "ood_bank": 8, "ood_test": 8, "ood_pose": 12}
    assert sorted({v.pose for v in index.views["test"]}) == list(range(8))
    # Out-of-domain poses carry the nearest in-domain pose as their label.
    meta = json.loads((bench / "meta.json").read_text())
    ood, poses = np.array(meta["ood_poses"]), np.array(meta["poses"])
    labels = [v.pose for v in index.views["ood_pose"][:6]]
    assert labels == list(np.argmax(ood @ poses.T, axis=1))


def test_triplet_renders_follow_the_reflected_poses(bench: Path) -> None:
    # The centre view of a triplet is the Fib pose itself: it equals the evaluation render of that pose
    # for the same object, and the left/right views differ from it.
    left, centre, right = (
        np.asarray(Image.open(bench / "views" / "duck" / "train000" / f"3_t_{k}.png")) for k in range(3)
    )
    assert np.abs(left.astype(int) - centre).mean() > 1 and np.abs(right.astype(int) - centre).mean() > 1
    assert centre.shape == (32, 32, 3) and centre[0, 0].tolist() == [0, 0, 0]  # black background
    poses = fibonacci_sphere(8)
    assert angle_deg(poses[0], poses[1]) > 20  # eval poses are far apart compared with the 10-20° steps


def test_renders_are_deterministic_and_cached(bench: Path, tmp_path: Path) -> None:
    again = generate(GeneratorConfig(**TINY), str(tmp_path))
    assert again != bench and _digest(again) == _digest(bench)
    stamp = (again / "splits.json").stat().st_mtime_ns
    assert generate(GeneratorConfig(**TINY), str(tmp_path)) == again
    assert (again / "splits.json").stat().st_mtime_ns == stamp  # served from the cache, not re-rendered


@pytest.mark.parametrize("mesh", ["sphere", "cube", "lego"])
def test_symmetric_untextured_meshes_are_refused(mesh: str) -> None:
    with pytest.raises(ConfigError, match=f"'{mesh}' looks the same after .* pose is not observable"):
        refuse_symmetric(GeneratorConfig(categories=[mesh], ood_categories=[]))


def test_asymmetric_and_textured_meshes_pass() -> None:
    refuse_symmetric(GeneratorConfig(categories=["duck", "teddy", "bunny", "blob_4"], ood_categories=["torus"]))


def test_unknown_mesh_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown mesh 'chair'"):
        generate(GeneratorConfig(categories=["chair"]), "/nonexistent-never-written")


# ---- training batches carry no labels


def _datamodule(bench: Path, **overrides) -> PoseBenchmarkDataModule:
    cfg = PoseDataConfig(
        source=PoseDataSource.folder,
        root=str(bench),
        stored_size=32,
        image_size=16,
        batch_size_per_device=4,
        num_workers=0,
        **overrides,
    )
    return PoseBenchmarkDataModule(cfg)


def test_training_batches_are_five_image_tensors_and_nothing_else(bench: Path) -> None:
    dm = _datamodule(bench)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, (list, tuple)) and len(batch) == 5
    assert all(x.dtype == torch.float32 and x.shape == (4, 3, 16, 16) for x in batch)
    t1, t2, _, x_c, _ = batch
    assert not torch.equal(t1, x_c) and not torch.equal(t1, t2)  # semantic views are augmented, triplets are not
    val_batch = next(iter(dm.val_dataloader()[0]))
    assert len(val_batch) == 6 and val_batch[1].dtype == torch.int64  # labels only in evaluation loaders


def test_evaluation_views_carry_instance_and_view_vector(bench: Path) -> None:
    dm = _datamodule(bench)
    dm.setup("test")
    meta = json.loads((bench / "meta.json").read_text())
    poses, ood_poses = np.array(meta["poses"]), np.array(meta["ood_poses"])
    _, _, pose, _, instance, direction = next(iter(dm.test_dataloader()[dm.eval_sets("test").index("bank")]))
    np.testing.assert_allclose(direction.numpy(), poses[pose.numpy()], atol=1e-6)
    assert instance.tolist() == [0, 0, 0, 0]  # the first train instance's first views
    ood = dm.eval_datasets["ood_pose"]
    np.testing.assert_allclose(np.stack([ood[i][5].numpy() for i in range(6)]), ood_poses, atol=1e-6)
    assert [ood[i][2] for i in range(6)] == list(np.argmax(ood_poses @ poses.T, axis=1))  # the label: nearest pose


def test_a_label_reaching_training_step_fails(bench: Path) -> None:
    from lightning_modules.ssl_trajectory.module import unlabelled_views

    dm = _datamodule(bench)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    unlabelled_views(batch)
    with pytest.raises(TypeError, match="no labels"):
        unlabelled_views([*batch, torch.zeros(4, dtype=torch.long)])
    with pytest.raises(TypeError, match="no labels"):
        unlabelled_views([*batch[:4], torch.zeros(4, dtype=torch.long)])


# ---- bad inputs: one line each, raised where first seen


def _copy(bench: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bench"
    shutil.copytree(bench, root)
    return root


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        _datamodule(tmp_path / "absent").check()
    assert "does not exist" in _one_line(exc)
    with pytest.raises(DataError, match="data.root is not set"):
        PoseBenchmarkDataModule(PoseDataConfig(source=PoseDataSource.folder)).check()


def test_missing_and_malformed_split_json(bench: Path, tmp_path: Path) -> None:
    root = _copy(bench, tmp_path)
    (root / "splits.json").unlink()
    with pytest.raises(DataError, match="splits.json not found"):
        _datamodule(root).check()
    (root / "splits.json").write_text('{"train": ["duck/train000",]')
    with pytest.raises(DataError) as exc:
        _datamodule(root).check()
    assert "is not valid JSON (line 1" in _one_line(exc)
    (root / "splits.json").write_text('{"train": ["duck/train000"], "val": [], "test": ["duck/test000"]}')
    with pytest.raises(DataError, match="split 'val' is missing or empty"):
        _datamodule(root).check()


def test_missing_triplet_member(bench: Path, tmp_path: Path) -> None:
    root = _copy(bench, tmp_path)
    (root / "views" / "duck" / "train001" / "5_t_2.png").unlink()
    with pytest.raises(DataError) as exc:
        _datamodule(root).check()
    assert "triplet 5_t is missing 5_t_2.png" in _one_line(exc)


def test_wrong_image_size(bench: Path) -> None:
    with pytest.raises(DataError) as exc:
        PoseBenchmarkDataModule(PoseDataConfig(source=PoseDataSource.folder, root=str(bench), stored_size=128)).check()
    assert "is 32x32 but data.stored_size=128" in _one_line(exc)


@pytest.mark.parametrize("mode, word", [("L", "grayscale"), ("RGBA", "RGBA")])
def test_grayscale_or_rgba_images(bench: Path, tmp_path: Path, mode: str, word: str) -> None:
    root = _copy(bench, tmp_path)
    first = sorted((root / "views" / "bunny" / "train000").iterdir())[0]
    Image.open(first).convert(mode).save(first)
    with pytest.raises(DataError) as exc:
        _datamodule(root).check()
    assert f"is {word} (mode {mode})" in _one_line(exc)


def test_pose_index_outside_the_table(bench: Path, tmp_path: Path) -> None:
    root = _copy(bench, tmp_path)
    shutil.copy(root / "views" / "duck" / "val000" / "0_t_1.png", root / "views" / "duck" / "val000" / "9_t_1.png")
    with pytest.raises(DataError, match="pose index 9 .* outside the pose table"):
        _datamodule(root).check()


def test_non_contiguous_pose_labels_without_a_table_are_remapped(bench: Path, tmp_path: Path) -> None:
    root = _copy(bench, tmp_path)
    (root / "meta.json").unlink()
    shutil.rmtree(root / "ood_poses")
    for path in (root / "views").rglob("*.png"):  # poses 0..7 -> 0, 10, ..., 70
        pose, rest = path.name.split("_", 1)
        path.rename(path.with_name(f"{int(pose) * 10}_{rest}"))
    index = read_benchmark(root, 32)
    assert index.n_poses == 8 and sorted({v.pose for v in index.views["val"]}) == list(range(8))
    assert index.views["ood_pose"] == []
