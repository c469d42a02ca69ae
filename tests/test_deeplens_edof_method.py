"""`method: deeplens_edof` end to end: gradients reach the lens through rendering, training beats the blur,
export writes the lens and the network, DDP metrics equal a single-process evaluation, bad input is named."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, only_run_dir, train_cli, train_subprocess
from datamodules.image_patches import ImagePatchesDataModule
from lightning_modules.deeplens_edof.config import EdofExperimentConfig
from lightning_modules.deeplens_edof.module import DeepLensEdofModule
from lightning_modules.optics import Lens
from tenfold.cli import load_config
from tenfold.config import to_plain
from tenfold.errors import ConfigError, DataError
from tenfold.export import load_export

DEMO = "configs/demo/deeplens_edof.yaml"
BAND = ["model.depth_range_mm=[-200.0,-400.0]", "model.eval_depths_mm=[-250.0,-350.0]"]


def demo_module(*overrides: str) -> DeepLensEdofModule:
    cfg = load_config([str(REPO / DEMO)], list(overrides))
    assert isinstance(cfg, EdofExperimentConfig)
    return DeepLensEdofModule(config=to_plain(cfg))


def blur_loss(module: DeepLensEdofModule, images: torch.Tensor, fields: torch.Tensor, depth: float) -> torch.Tensor:
    return F.mse_loss(module.render(images, fields, [depth] * len(images)), images)


def test_the_lens_receives_the_rendering_gradient() -> None:
    torch.manual_seed(0)
    module = demo_module()
    images = F.interpolate(torch.rand(2, 3, 8, 8), size=48, mode="bicubic").clamp(0, 1)
    blur_loss(module, images, torch.tensor([[0.0, 0.0], [0.4, -0.3]]), -400.0).backward()
    curvatures = [s.c for s in module.lens.surfaces if hasattr(s, "c")]
    grads = torch.stack([c.grad for c in curvatures])
    assert torch.isfinite(grads).all() and (grads.abs() > 0).all(), grads
    assert module.lens.d_sensor.grad is not None and module.lens.d_sensor.grad != 0


def test_the_rendering_gradient_matches_finite_differences() -> None:
    # The optics hold the ray sampling (entrance pupil, field angles) fixed under autograd, as the official
    # tracer does; curvatures behind the stop, on axis, change neither, so a finite difference sees the same
    # function as autograd.
    torch.manual_seed(0)
    module = demo_module()
    images = F.interpolate(torch.rand(2, 3, 8, 8), size=48, mode="bicubic").clamp(0, 1)
    fields, depth = torch.zeros(2, 2), -400.0
    stop = module.lens.stop_index
    curvatures = [s.c for s in list(module.lens.surfaces)[stop + 1 :]]
    grads = torch.autograd.grad(blur_loss(module, images, fields, depth), curvatures)
    direction = torch.stack(grads) / torch.stack(grads).norm()
    h = 1e-6
    with torch.no_grad():
        values = []
        for sign in (1, -1):
            for c, v in zip(curvatures, direction):
                c.add_(sign * h * v)
            values.append(float(blur_loss(module, images, fields, depth)))
            for c, v in zip(curvatures, direction):
                c.sub_(sign * h * v)
    finite_difference = (values[0] - values[1]) / (2 * h)
    assert finite_difference == pytest.approx(float(torch.stack(grads).norm()), rel=0.02)


def test_batched_psfs_equal_one_psf_rgb_call_per_crop() -> None:
    from lightning_modules.optics import psf_rgb, psf_rgb_batch

    lens = Lens.from_json(REPO / "lightning_modules/optics/prescriptions/cooke_triplet.json")
    fields, depths = torch.tensor([[0.0, 0.0], [0.5, -0.2], [-0.3, 0.6]]), [-150.0, -10000.0, -700.0]
    with torch.no_grad():
        batch = psf_rgb_batch(lens, fields, depths, 15, 256, 0.1)
        for i, depth in enumerate(depths):
            single = psf_rgb(lens, tuple(fields[i].tolist()), depth, 15, spp=256, pixel_size_mm=0.1)
            torch.testing.assert_close(batch[i], single, rtol=0, atol=1e-9)
    assert batch[1, 1].max() > 5 * batch[0, 1].max()  # 10 m is near focus, 0.15 m far from it


def test_the_crop_kernel_is_the_sensor_psf_turned_upright() -> None:
    from lightning_modules.deeplens_edof.simulate import SensorGeometry, upright_psfs
    from lightning_modules.optics import psf_rgb_batch

    lens = Lens.from_json(REPO / "lightning_modules/optics/prescriptions/cooke_triplet.json")
    geometry = SensorGeometry.of(lens, 128)
    # The 128 px scene spans the 25.7 mm square sensor; its half side is 1/sqrt(2) of the half diagonal.
    assert geometry.pixel_size_mm == pytest.approx(25.7476 / 128) and geometry.field_scale == pytest.approx(0.5**0.5)
    scene_field = torch.tensor([[0.6, 0.4]])
    with torch.no_grad():
        upright = upright_psfs(lens, scene_field, [-500.0], 21, 256, geometry)
        sensor = psf_rgb_batch(lens, scene_field * geometry.field_scale, [-500.0], 21, 256, geometry.pixel_size_mm)
    torch.testing.assert_close(upright, sensor.flip(-2, -1), rtol=0, atol=0)


def test_psf_map_rendering_agrees_with_the_per_crop_psf() -> None:
    torch.manual_seed(0)
    images = F.interpolate(torch.rand(2, 3, 8, 8), size=32, mode="bicubic").clamp(0, 1)
    fields, depths = torch.tensor([[0.0, 0.0], [0.5, 0.25]]), [-300.0, -2000.0]
    with torch.no_grad():
        patch = demo_module().render(images, fields, depths)
        # One tile: the map's only PSF sits at the crop centre, as psf_patch's does.
        one_tile = demo_module("model.render=psf_map", "model.psf_grid=1").render(images, fields, depths)
        torch.testing.assert_close(one_tile, patch, rtol=0, atol=1e-6)
        # Three tiles per side: the centre tile of an on-axis crop is the on-axis PSF's.
        tiled = demo_module("model.render=psf_map", "model.psf_grid=3").render(images, fields, depths)
    assert (tiled - patch).abs().max() > 1e-4  # other tiles see other fields
    torch.testing.assert_close(tiled[0, :, 11:21, 11:21], patch[0, :, 11:21, 11:21], rtol=0, atol=1e-6)


def test_frozen_lens_quantities_get_no_gradient_and_no_optimizer_group() -> None:
    module = demo_module("model.lens_lr.c=0.0")
    names = {name for name, p in module.lens.named_parameters() if p.requires_grad}
    assert names and not any(n.endswith((".c", ".k", ".ai")) for n in names)
    assert set(module._lens_groups) == {"d", "d_sensor"}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~150 steps of the demo on a depth band of 0.2-0.4 m (blur radius 2-4 px), lens and network learning."""
    root = tmp_path_factory.mktemp("edof")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: on a busy 2-core machine one thread is several times faster
    try:
        assert train_cli("--config", DEMO, f"run.root={root}", "run.name=r1", "logger=tensorboard",
                         *BAND, "data.patches_per_image=25", "trainer.max_epochs=4", "trainer.num_sanity_val_steps=0",
                         "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                         "export.onnx=false") == 0
    finally:
        torch.set_num_threads(threads)
    return root / "deeplens_edof" / "r1"


def logged(run: Path, key: str) -> list[float]:
    with open(run / "metrics.csv") as fh:
        return [float(row[key]) for row in csv.DictReader(fh) if row.get(key)]


@pytest.mark.slow
def test_training_restores_held_out_crops_better_than_the_lens_alone(short_run: Path) -> None:
    for depth in ("", "@0.25m", "@0.35m"):
        rendered = logged(short_run, f"test/psnr_rendered{depth}")[-1]
        restored = logged(short_run, f"test/psnr_restored{depth}")[-1]
        assert restored > rendered + 0.5, (depth, rendered, restored)
    assert logged(short_run, "test/ssim_restored")[-1] > logged(short_run, "test/ssim_rendered")[-1]


@pytest.mark.slow
def test_the_lens_learns_to_render_the_depth_band_sharper(short_run: Path) -> None:
    from datamodules.image_patches import ImagePatchesDataModule

    # The starting Cooke triplet (focused at infinity) on the same held-out crops and depths.
    start = demo_module(*BAND)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (before,) = trainer.test(start, datamodule=ImagePatchesDataModule(start.cfg.data), verbose=False)
    assert logged(short_run, "test/psnr_rendered")[-1] > before["test/psnr_rendered"] + 0.3


@pytest.mark.slow
def test_validation_logs_image_samples(short_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(short_run / "tensorboard")).Reload()
    assert "val/samples" in events.Tags()["images"]
    assert {"val/psnr_restored@0.25m", "val/ssim_rendered@0.35m"} <= set(events.Tags()["scalars"])


@pytest.mark.slow
def test_export_holds_the_trained_lens_and_network(short_run: Path) -> None:
    from lightning_modules.deeplens_edof.module import DeepLensEdofModule

    module = DeepLensEdofModule.load_from_checkpoint(short_run / "checkpoints" / "best.ckpt", weights_only=True)
    net, meta = load_export(short_run / "export")
    assert meta["net"]["lens"] == "lens.json" and meta["input_size"] == [3, 32, 32]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), module.eval()(x), rtol=0, atol=1e-6)
    lens = Lens.from_json(short_run / "export" / "lens.json")
    trained = dict(module.lens.named_parameters())
    for name, param in lens.named_parameters():
        torch.testing.assert_close(param, trained[name].detach(), rtol=0, atol=1e-9)
    start = Lens.from_json(REPO / "lightning_modules/optics/prescriptions/cooke_triplet.json")
    assert float(lens.d_sensor.detach()) != float(start.d_sensor.detach())  # the lens did train
    assert json.loads((short_run / "export" / "lens.json").read_text())["surfaces"]


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_two_processes_log_the_single_process_test_metrics(tmp_path: Path) -> None:
    proc = train_subprocess(
        "--config", DEMO, f"run.root={tmp_path}", "logger=wandb", "trainer.strategy=ddp", "trainer.devices=2",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "data.batch_size_per_device=4",
        "data.eval_batch_size_per_device=3", "export.onnx=false", env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path, "deeplens_edof")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best.ckpt", "epoch000-step0000003.ckpt", "last.ckpt"]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert (run / "export" / "model.pt").is_file() and (run / "export" / "lens.json").is_file()
    ddp_psnr = logged(run, "test/psnr_restored")
    assert len(ddp_psnr) == 1

    # The same checkpoint on the whole test split (8 crops; 4 per rank above) in one process.
    module = DeepLensEdofModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True)
    from datamodules.image_patches import ImagePatchesDataModule

    datamodule = ImagePatchesDataModule(module.cfg.data)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    (single,) = trainer.test(module, datamodule=datamodule, verbose=False)
    assert ddp_psnr[0] == pytest.approx(single["test/psnr_restored"], abs=1e-4)


def test_bad_input_is_named() -> None:
    with pytest.raises(ConfigError, match="model.lens_file=missing.json"):
        demo_module("model.lens_file=missing.json")
    with pytest.raises(ConfigError, match="model.psf_ks=24 must be odd"):
        demo_module("model.psf_ks=24")
    paper = load_config([str(REPO / "configs/deeplens_edof.yaml")], [])
    with pytest.raises(DataError, match="needs data.root: set data.root=/path/to/DIV2K"):
        ImagePatchesDataModule(paper.data).check()
