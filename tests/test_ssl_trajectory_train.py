"""ssl_trajectory end to end through train.py on a tiny rendered benchmark: metrics, the val-selected pose
kNN grid, the relative-pose probe, what reaches W&B, export; the paper config's one-line error; config
errors; DDP against one process (slow)."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest
import torch

from conftest import only_run_dir, train_cli, train_subprocess

TINY_DATA = [
    "data.generate.categories=[duck,bunny]",
    "data.generate.ood_categories=[torus]",
    "data.generate.train_instances=2",
    "data.generate.val_instances=1",
    "data.generate.test_instances=1",
    "data.generate.ood_bank_instances=1",
    "data.generate.ood_test_instances=1",
    "data.generate.n_poses=8",
    "data.generate.n_ood_poses=6",
    "data.generate.render_size=32",
]
TINY_RUN = [
    "--config",
    "configs/demo/ssl_trajectory.yaml",
    *TINY_DATA,
    "logger=csv",
    "export.onnx=false",
    "model.backbone.width=8",
    "model.projector_hidden_dim=32",
    "model.projector_out_dim=32",
    "eval.ks=[1,3,100]",
    "eval.probe_steps=20",
    "data.batch_size_per_device=8",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with the W&B offline logger (what a researcher would open)."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.delenv("WANDB_API_KEY", raising=False)
        with pytest.warns(UserWarning, match=r"kNN k=100 is larger than the smallest per-category pose bank \(16"):
            assert train_cli(*[a for a in TINY_RUN if a != "logger=csv"], "logger=wandb", f"run.root={root}") == 0
    return only_run_dir(root, "ssl_trajectory")


def test_metrics_grid_and_export(tiny_run: Path) -> None:
    with open(tiny_run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    logged = {key for row in rows for key, value in row.items() if value}
    for layer in ("layer3", "layer4", "pooled"):
        assert {
            f"val/pose_knn_{layer}",
            f"test/pose_knn_{layer}",
            f"test/pose_knn_{layer}_ood_pose",
            f"test/pose_knn_{layer}_ood_category",
        } <= logged
    assert {
        "train/loss",
        "train/sem_loss",
        "train/traj_loss_epoch",
        "train/vicreg_variance",
        "test/sem_knn",
        "test/sem_linear",
    } <= logged
    for layer in ("layer3", "layer4", "pooled"):  # the relative-pose probe, in domain and out of domain
        assert {
            f"test/rel_pose_{layer}",
            f"test/rel_pose_{layer}_ood_pose",
            f"test/rel_pose_{layer}_ood_category",
        } <= logged
    report = json.loads((tiny_run / "pose_knn_grid.json").read_text())
    layer3 = report["layers"]["layer3"]
    assert len(layer3["val"]) == len(report["grid"]) == 3 * 5 + 3  # k x T cosine + k euclidean
    best = layer3["selected_on_val"]
    assert layer3["val"][best] == max(layer3["val"].values())  # selected on val, reported on test
    assert report["metrics"]["test/pose_knn_layer3"] == layer3["test"][best]
    assert report["metrics"]["test/rel_pose"] == report["metrics"]["test/rel_pose_layer3"]
    assert set(report["relative_pose_majority_bin"]) == {"_test", "_ood_pose", "_ood_category"}

    from lightning_modules.ssl_trajectory.module import SSLTrajectoryModule
    from tenfold.export import load_export

    exported, meta = load_export(tiny_run / "export")
    assert meta["input_size"] == [3, 16, 16] and meta["class_names"] == ["bunny", "duck"]
    module = SSLTrajectoryModule.load_from_checkpoint(tiny_run / "checkpoints" / "best.ckpt", weights_only=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), module.net.eval()(x), rtol=0, atol=1e-6)
        assert exported(x).shape == (2, 64)


def test_wandb_panels_triplet_grid_layer_chart_and_loss_terms(tiny_run: Path) -> None:
    """What reaches the dashboard: the triplet grid holds the rendered pixels, the per-layer chart is a real
    picture, and the loss terms and per-layer accuracies are in the run's history."""
    import numpy as np
    from PIL import Image

    from datamodules.ssl_trajectory import PoseBenchmarkDataModule
    from tenfold.cli import load_config
    from tenfold.media import MIN_SIDE

    media = next(tiny_run.glob("wandb/offline-run-*/files/media/images"))
    (grid,) = media.glob("train/triplets_*.png")
    pixels = np.asarray(Image.open(grid).convert("RGB")).astype(int)
    cfg = load_config([str(tiny_run / "config.yaml")], [])
    data = PoseBenchmarkDataModule(cfg.data)
    plain, side = data.plain_transform(), cfg.data.image_size
    factor = -(-MIN_SIDE // side)
    mean, std = torch.tensor(cfg.data.mean).view(3, 1, 1), torch.tensor(cfg.data.std).view(3, 1, 1)

    def shown(path: str) -> np.ndarray:  # a view as the grid shows it: resized, de-normalised, upsampled
        image = (plain(Image.open(path).convert("RGB")) * std + mean).clamp(0, 1)
        return (image * 255).round().permute(1, 2, 0).numpy().astype(int).repeat(factor, 0).repeat(factor, 1)

    tile = pixels[2 : 2 + side * factor, 2 : 2 + side * factor]  # the first tile: x_L of the first sample
    lefts = [triplet[0] for triplet in data.index.triplets]
    assert min(np.abs(tile - shown(path)).max() for path in lefts) <= 1
    assert len(np.unique(tile)) > 8
    rows = len(pixels) // (side * factor + 2 + 14)  # tiles with a 14-px caption, 2-px padding
    assert rows == cfg.eval.triplet_examples  # one row (L, C, R, T1, T2) per example
    (chart,) = media.glob("test/accuracy_per_layer_*.png")
    assert len(np.unique(np.asarray(Image.open(chart).convert("L")))) > 16
    (log,) = tiny_run.glob("wandb/offline-run-*/run-*.wandb")
    records = log.read_bytes()  # history rows are protobuf records: their keys appear verbatim
    for key in (
        "train/traj_loss",
        "train/sem_loss",
        "train/vicreg_invariance",
        "train/vicreg_covariance",
        "val/pose_knn_layer3",
        "val/pose_knn_layer4",
        "val/pose_knn_pooled",
        "test/rel_pose_layer3",
    ):
        assert key.encode() in records, key


def _one_error_line(capsys: pytest.CaptureFixture, code: int) -> str:
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_paper_config_needs_the_data_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = _one_error_line(
        capsys, train_cli("--config", "configs/ssl_trajectory.yaml", f"run.root={tmp_path}", "logger=none")
    )
    assert "data.root is not set" in line and "ShapeNet" in line


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.traj_lambda=-0.1", "model.traj_lambda=-0.1 is negative"),
        ("data.batch_size_per_device=1", "model.loss=vicreg needs data.batch_size_per_device >= 2"),
        ("data.generate.categories=[duck,sphere]", "'sphere' looks the same after"),
        ("model.traj_layer=layer5", "expected FeatureLayer: one of pooled, layer3, layer4"),
        ("eval.rel_pose_bins=1", "the relative-pose probe needs >= 2 bins"),
    ],
)
def test_bad_config_values_fail_in_one_line(
    override: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [a for a in TINY_RUN if not a.startswith("data.batch_size_per_device")]
    line = _one_error_line(capsys, train_cli(*args, f"run.root={tmp_path}", override))
    assert message in line


# ---- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loss_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from lightly.loss import VICRegLoss

    from lightning_modules.ssl_trajectory.trajectory_loss import trajectory_loss

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    x = [torch.randn(32, 24, generator=g) for _ in range(3)]
    part = slice(rank * 32 // world, (rank + 1) * 32 // world)
    loss = VICRegLoss(25, 50, 1, gather_distributed=True)(z1[part], z2[part]) + 0.2 * trajectory_loss(
        *(v[part] for v in x)
    )
    dist.all_reduce(loss)
    torch.save(loss / world, f"{out}.{world}.{rank}")
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.distributed
def test_loss_with_two_processes_matches_one(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = str(tmp_path / "loss")
    for world in (1, 2):
        mp.spawn(_loss_worker, args=(world, _free_port(), out), nprocs=world)
    one = torch.load(f"{out}.1.0", weights_only=True)
    two = torch.load(f"{out}.2.0", weights_only=True)
    # Variance/covariance on the gathered batch, invariance and trajectory terms averaged over equal shards.
    assert float(two) == pytest.approx(float(one), rel=1e-5)


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_knn_accuracy_matches_one_process(tmp_path: Path) -> None:
    args = list(TINY_RUN)
    proc = train_subprocess(
        *args,
        f"run.root={tmp_path}",
        "trainer.strategy=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "data.eval_batch_size_per_device=7",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path, "ssl_trajectory")
    ddp = json.loads((run / "pose_knn_grid.json").read_text())["metrics"]

    # The same checkpoint, tested in one process.
    import lightning as L

    from datamodules.ssl_trajectory import PoseBenchmarkDataModule
    from lightning_modules.ssl_trajectory.module import SSLTrajectoryModule

    module = SSLTrajectoryModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path / "single"
    )
    trainer.test(module, datamodule=PoseBenchmarkDataModule(module.cfg.data), weights_only=True)
    single = {k: float(v) for k, v in trainer.callback_metrics.items()}
    # Banks gathered from both ranks and de-duplicated by index: equal up to float summation order.
    for key, value in ddp.items():
        assert single[key] == pytest.approx(value, abs=1e-6), key


# ---- the paper setting and the objective's options, without training


def _module(**model):
    from lightning_modules.ssl_trajectory.config import SSLTrajectoryConfig
    from lightning_modules.ssl_trajectory.module import SSLTrajectoryModule
    from tenfold.config import to_plain

    cfg = SSLTrajectoryConfig()
    cfg.model.backbone.width, cfg.model.projector_hidden_dim, cfg.model.projector_out_dim = 8, 32, 32
    config = to_plain(cfg)
    config["model"].update(model)
    return SSLTrajectoryModule(
        config,
        categories=["a", "b"],
        ood_categories=[],
        n_poses=8,
        val_sets=["bank", "val"],
        test_sets=["bank", "val", "test"],
    )


def test_paper_config_holds_the_paper_values(in_repo: None) -> None:
    from tenfold.cli import load_config

    cfg = load_config(["configs/ssl_trajectory.yaml"], ["data.root=/data/shapenet_renders"])
    m, o = cfg.model, cfg.optim
    assert (o.name, o.lr, o.weight_decay, o.warmup_epochs, o.warmup_lr, o.scheduler, o.reference_batch_size) == (
        "lars",
        0.3,
        1e-4,
        10,
        3e-5,
        "cosine",
        256,
    )
    assert (m.lars_eta, m.lars_clip, cfg.data.batch_size_per_device, cfg.trainer.max_epochs) == (0.02, True, 256, 300)
    assert (m.loss.value, m.vicreg_invariance, m.vicreg_variance, m.vicreg_covariance, m.variance_sum) == (
        "vicreg",
        25.0,
        25.0,
        1.0,
        True,
    )
    assert (m.projector_hidden_dim, m.projector_out_dim, m.traj_lambda, m.traj_layer.value) == (
        2048,
        2048,
        0.2,
        "pooled",
    )
    assert m.backbone.width == 64 and m.backbone.imagenet_init is None  # ResNet-18 from scratch
    assert (cfg.data.image_size, cfg.data.stored_size, cfg.eval.ks, cfg.eval.rel_pose_bins) == (
        32,
        128,
        [50, 100, 200],
        50,
    )


@pytest.mark.parametrize("loss, layer", [("vicreg", "pooled"), ("simclr", "layer3"), ("simsiam", "layer4")])
def test_each_ssl_loss_and_trajectory_layer_gives_finite_gradients(loss: str, layer: str) -> None:
    from lightly.loss import NegativeCosineSimilarity, NTXentLoss, VICRegLoss

    from lightning_modules.ssl_trajectory.trajectory_loss import trajectory_loss

    module = _module(loss=loss, traj_layer=layer)
    expected = {"vicreg": VICRegLoss, "simclr": NTXentLoss, "simsiam": NegativeCosineSimilarity}[loss]
    assert isinstance(module.ssl_loss, expected)
    if loss == "vicreg":  # solo-learn's summed variance: 25/25/1 is lightly's (25, 50, 1), gathered over ranks
        assert (module.ssl_loss.lambda_param, module.ssl_loss.mu_param, module.ssl_loss.nu_param) == (25, 50, 1)
        assert module.ssl_loss.gather_distributed
    if loss == "simclr":
        assert module.ssl_loss.temperature == 0.2
    g = torch.Generator().manual_seed(0)
    t1, t2, x_l, x_c, x_r = (torch.randn(4, 3, 16, 16, generator=g) for _ in range(5))
    sem, _ = module.semantic_loss(t1, t2)
    module.eval()  # batch-norm running statistics: each view's features do not depend on the others
    traj = module.trajectory_term(x_l, x_c, x_r)
    feats = [module.net.features(x)[layer] for x in (x_l, x_c, x_r)]
    assert traj.item() == pytest.approx(trajectory_loss(*feats).item(), abs=1e-5)  # the selected layer
    (sem + 0.2 * traj).backward()
    grads = [p.grad for p in module.net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(gr).all() for gr in grads)


def test_imagenet_init_loads_torchvision_weights_except_the_stem(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    from tenfold.errors import CheckpointError

    reference = resnet18()  # random weights in torchvision's layout, as resnet18-f37072fd.pth is
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    module = _module(backbone={"width": 64, "blocks": [2, 2, 2, 2], "imagenet_init": str(tmp_path / "resnet18.pth")})
    torch.testing.assert_close(module.net.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert module.net.conv1.weight.shape == (64, 3, 3, 3)  # the CIFAR stem stays freshly initialised
    with pytest.raises(CheckpointError, match="imagenet_init=/nowhere.pth not found"):
        _module(backbone={"width": 64, "blocks": [2, 2, 2, 2], "imagenet_init": "/nowhere.pth"})
