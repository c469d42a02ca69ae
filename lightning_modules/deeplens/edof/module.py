"""`method: deeplens_edof`: an extended-depth-of-field lens and a restoration network trained end to end.

One step (digest section 4, the official recipe): sharp crop -> render through the lens's PSF at the crop's
field position and a random object depth -> add sensor noise -> restoration network -> MSE to the sharp crop.
The gradient reaches the lens through the differentiable PSF, so the lens learns to blur in a way the network
can undo over the whole depth range. Validation and test render every crop at fixed depths and log PSNR/SSIM
of the rendered (what the lens alone gives) and restored images per depth.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchvision.utils import make_grid

from datamodules.image_patches import ImagePatchesDataModule
from lightning_modules.deeplens.edof.config import EdofExperimentConfig
from lightning_modules.deeplens.edof.render import add_sensor_noise
from lightning_modules.deeplens.edof.restoration_net import build_restoration_net
from lightning_modules.deeplens.edof.simulate import SensorGeometry, render_through_lens, sample_depths
from lightning_modules.deeplens.optics import Lens
from tenfold.config import from_plain
from tenfold.errors import ConfigError
from tenfold.loggers import redact_secrets
from tenfold.optim import TimmSchedulerSteps, build_optimizer, optimizers_with_schedule, scaled_lr
from tenfold.registry import register_method

REPO = Path(__file__).resolve().parents[3]
LENS_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_lens_file(path: str) -> Path:
    """The prescription as given, else relative to the repository root (configs name repo paths)."""
    candidate = Path(path)
    if not candidate.is_file() and not candidate.is_absolute() and (REPO / candidate).is_file():
        return REPO / candidate
    if not candidate.is_file():
        shipped = REPO / "lightning_modules" / "deeplens" / "prescriptions"
        raise ConfigError(f"model.lens_file={path}: no such file. Point it at a lens prescription JSON, e.g. "
                          f"one of {shipped}/*.json or the export/lens.json of a deeplens run")
    return candidate


def depth_tag(depth_mm: float) -> str:
    return f"{abs(depth_mm) / 1000:g}m"


def _image_metrics() -> MetricCollection:
    # Mean of per-image PSNR (dim=(1, 2, 3)), not the PSNR of the pooled MSE; states sum over DDP ranks.
    return MetricCollection({
        "psnr": PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3)),
        "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
    })


@register_method(
    "deeplens_edof",
    config=EdofExperimentConfig,
    datamodule=ImagePatchesDataModule,
    summary="DeepLens (arXiv 2302.01089) EDoF: lens + NAFNet trained end to end through the differentiable PSF",
)
class DeepLensEdofModule(TimmSchedulerSteps, L.LightningModule):
    def __init__(self, config: dict) -> None:
        super().__init__()
        self.save_hyperparameters({"config": redact_secrets(config)})
        self.cfg: EdofExperimentConfig = from_plain(EdofExperimentConfig, config)
        model = self.cfg.model
        if model.lens_dtype not in LENS_DTYPES:
            raise ConfigError(f"model.lens_dtype={model.lens_dtype!r}: use one of {', '.join(LENS_DTYPES)}")
        if model.psf_ks % 2 == 0:
            raise ConfigError(f"model.psf_ks={model.psf_ks} must be odd (the PSF is centred on a pixel)")
        self.lens = Lens.from_json(resolve_lens_file(model.lens_file), dtype=LENS_DTYPES[model.lens_dtype])
        self._lens_groups = self._freeze_unlearned_lens_parameters()
        net = model.net
        self.net = build_restoration_net(net.width, net.enc_blocks, net.middle_blocks, net.dec_blocks)
        self.geometry = SensorGeometry.of(self.lens, self.cfg.data.image_size)
        # metrics[stage]["<rendered|restored>_<all|depth index>"]; module names cannot hold the depth's "."
        self.eval_metrics = nn.ModuleDict({
            stage: nn.ModuleDict({
                f"{kind}_{bucket}": _image_metrics()
                for kind in ("rendered", "restored")
                for bucket in ["all", *map(str, range(len(model.eval_depths_mm)))]
            })
            for stage in ("val", "test")
        })

    # ---- image simulation

    def render(self, images: Tensor, fields: Tensor, depths: list[float]) -> Tensor:
        """Sharp crops (B, 3, P, P) -> what the sensor records through the lens (before noise)."""
        model = self.cfg.model
        return render_through_lens(
            self.lens, images, fields, depths, ks=model.psf_ks, spp=model.psf_spp, geometry=self.geometry,
            mode=model.render, grid=model.psf_grid, image_size=self.cfg.data.image_size,
        )

    def forward(self, rendered: Tensor) -> Tensor:
        return self.net(rendered)

    # ---- steps

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        images, fields, _ = batch
        model = self.cfg.model
        depths = sample_depths(images.shape[0], model.depth_range_mm, model.depth_law)
        rendered = add_sensor_noise(self.render(images, fields, depths), model.noise_sigma)
        loss = F.mse_loss(self(rendered), images)
        self.log("train/loss_step", loss, prog_bar=True, batch_size=images.shape[0])
        self.log("train/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=images.shape[0])
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def _evaluate(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int, stage: str) -> None:
        images, fields, indices = batch
        metrics = self.eval_metrics[stage]
        losses, samples = [], []
        depths = self.cfg.model.eval_depths_mm
        for bucket, depth in enumerate(depths):
            rendered = self._eval_noise(self.render(images, fields, [depth] * len(images)), indices, depth)
            restored = self(rendered)
            losses.append(F.mse_loss(restored, images))
            for kind, output in (("rendered", rendered), ("restored", restored)):
                output = output.clamp(0, 1)
                metrics[f"{kind}_{bucket}"].update(output, images)
                metrics[f"{kind}_all"].update(output, images)
            samples.append((rendered, restored))
        loss = torch.stack(losses).mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True, batch_size=images.shape[0])
        for name, collection in metrics.items():
            kind, _, bucket = name.partition("_")
            suffix = "" if bucket == "all" else f"@{depth_tag(depths[int(bucket)])}"
            for metric_name, metric in collection.items():
                headline = stage == "val" and name == "restored_all" and metric_name == "psnr"
                self.log(f"{stage}/{metric_name}_{kind}{suffix}", metric, prog_bar=headline,
                         batch_size=images.shape[0])
        if stage == "val" and batch_idx == 0:
            self._log_samples(images, samples)

    def _eval_noise(self, rendered: Tensor, indices: Tensor, depth: float) -> Tensor:
        """Sensor noise seeded by sample index and depth: the same pixels whatever the batching or world size."""
        noisy = []
        for image, index in zip(rendered, indices.tolist()):
            generator = torch.Generator().manual_seed(int(index) * 100_003 + int(abs(depth)))
            noisy.append(add_sensor_noise(image, self.cfg.model.noise_sigma, generator))
        return torch.stack(noisy)

    def _log_samples(self, images: Tensor, samples: list[tuple[Tensor, Tensor]]) -> None:
        """Rows: sharp | rendered and restored at every eval depth, for the first few crops."""
        count = min(self.cfg.model.log_images, len(images))
        loggers = [lg for lg in self.loggers if isinstance(lg, (WandbLogger, TensorBoardLogger))]
        if not count or not loggers or not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        columns = [images[:count]] + [t[:count] for pair in samples for t in pair]
        tiles = torch.stack(columns, dim=1).flatten(0, 1).detach().float().clamp(0, 1).cpu()  # (count * cols, ...)
        grid = make_grid(tiles, nrow=len(columns), padding=2)
        caption = "sharp | " + " | ".join(f"rendered, restored @{depth_tag(d)}" for d in self.cfg.model.eval_depths_mm)
        for logger in loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="val/samples", images=[grid], caption=[caption], step=self.global_step)
            else:
                logger.experiment.add_image("val/samples", grid, self.global_step)

    # ---- optimisation

    def _freeze_unlearned_lens_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Lens parameters by quantity (c, d, k, ai, d_sensor); those with lr 0 (and empty ones) stop needing
        gradients, which also keeps DDP from waiting for gradients that never come."""
        rates = self.cfg.model.lens_lr
        groups: dict[str, list[nn.Parameter]] = {}
        for name, param in self.lens.named_parameters():
            quantity = name.rsplit(".", 1)[-1]
            if not hasattr(rates, quantity):
                raise ConfigError(f"lens parameter '{name}' has no learning rate in model.lens_lr")
            if getattr(rates, quantity) > 0 and param.numel() > 0:
                groups.setdefault(quantity, []).append(param)
            else:
                param.requires_grad_(False)
        return groups

    def configure_optimizers(self) -> Any:
        trainer = self.trainer
        global_batch = self.cfg.data.batch_size_per_device * trainer.world_size * trainer.accumulate_grad_batches
        lr = scaled_lr(self.cfg.optim, global_batch)
        optimizer = build_optimizer(self.net, self.cfg.optim, lr)
        # The lens joins the same optimizer (AdamW without decay = Adam, as the official lens optimizer) with a
        # group per quantity, so one cosine schedule anneals every learning rate from its own start.
        for quantity, params in self._lens_groups.items():
            optimizer.add_param_group({"params": params, "lr": getattr(self.cfg.model.lens_lr, quantity),
                                       "weight_decay": 0.0, "name": f"lens.{quantity}"})
        total = int(trainer.estimated_stepping_batches)
        per_epoch = max(1, int(trainer.num_training_batches) // trainer.accumulate_grad_batches)
        for logger in self.loggers:
            logger.log_hyperparams({"optim/global_batch": global_batch, "optim/base_lr": lr,
                                    "optim/total_updates": total})
        return optimizers_with_schedule(optimizer, self.cfg.optim, total, per_epoch)

    # ---- export (tenfold/runner.py): the network as model.pt/onnx, the lens as export/lens.json

    def export_model(self) -> nn.Module:
        export_dir = Path(self.trainer.default_root_dir) / "export"
        export_dir.mkdir(parents=True, exist_ok=True)
        self.lens.save_json(export_dir / "lens.json")
        return copy.deepcopy(self.net).float().cpu().eval()

    def export_spec(self) -> dict:
        net = self.cfg.model.net
        return {
            "target": "lightning_modules.deeplens.edof.restoration_net:build_restoration_net",
            "kwargs": {"width": net.width, "enc_blocks": list(net.enc_blocks), "middle_blocks": net.middle_blocks,
                       "dec_blocks": list(net.dec_blocks)},
            "lens": "lens.json",
        }
