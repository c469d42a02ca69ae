"""`method: deeplens_edof`: an extended-depth-of-field lens and a restoration network trained end to end.

One step (digest section 4, the official recipe): sharp crop -> render through the lens's PSF at the crop's
field position and a random object depth -> add sensor noise -> restoration network -> MSE to the sharp crop.
The gradient reaches the lens through the differentiable PSF, so the lens learns to blur in a way the network
can undo over the whole depth range. Validation and test render every crop at fixed depths and log PSNR/SSIM
of the rendered (what the lens alone gives) and restored images per depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from datamodules.image_patches import ImagePatchesDataModule
from lightning_modules.deeplens_edof.config import EdofExperimentConfig
from lightning_modules.deeplens_edof.render import add_sensor_noise
from lightning_modules.deeplens_edof.restoration_net import build_restoration_net
from lightning_modules.deeplens_edof.simulate import SensorGeometry, render_through_lens, sample_depths
from lightning_modules.optics import Lens
from lightning_modules.optics.formats import save_deeplens_json, save_zmx
from tenfold.errors import ConfigError
from tenfold.media import has_media_logger, log_image_grid
from tenfold.method import ExportWriter, MethodModule
from tenfold.registry import register_method

LENS_DTYPES = {"float64": torch.float64, "float32": torch.float32}


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
)
class DeepLensEdofModule(MethodModule):
    monitors = ("val/loss", "val/psnr_*", "val/ssim_*")
    config_class = EdofExperimentConfig

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        model = self.cfg.model
        if model.psf_ks % 2 == 0:
            raise ConfigError(f"model.psf_ks={model.psf_ks} must be odd (the PSF is centred on a pixel)")
        self.lens = Lens.from_json(model.lens_file, key="model.lens_file", dtype=LENS_DTYPES[model.lens_dtype])
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
        self.log_train_loss(loss, images.shape[0])
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
        if not count or not has_media_logger(self.loggers) or not self.trainer.is_global_zero \
                or self.trainer.sanity_checking:
            return
        columns = [images[:count]] + [t[:count] for pair in samples for t in pair]
        tiles = torch.stack(columns, dim=1).flatten(0, 1).detach().float().clamp(0, 1).cpu()  # (count * cols, ...)
        tags = ["sharp"] + [f"{kind} @{depth_tag(d)}" for d in self.cfg.model.eval_depths_mm
                            for kind in ("rendered", "restored")]
        log_image_grid(self.loggers, "val/samples", list(tiles), self.global_step, captions=tags * count,
                       nrow=len(columns))

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

    def optimizer_parameters(self) -> list[dict]:
        optim = self.cfg.optim
        net = (param_groups_weight_decay(self.net, optim.weight_decay) if optim.no_weight_decay_1d
               else [{"params": list(self.net.parameters())}])
        # The lens joins the same optimizer (AdamW without decay = Adam, as the official lens optimizer) with a
        # group per quantity, so one cosine schedule anneals every learning rate from its own start.
        lens = [{"params": params, "lr": getattr(self.cfg.model.lens_lr, quantity), "weight_decay": 0.0,
                 "name": f"lens.{quantity}"} for quantity, params in self._lens_groups.items()]
        return net + lens

    # ---- export: the network as model.pt/onnx, the lens as export/lens.json

    def onnx_io(self) -> tuple[list[str], list[str]]:
        return ["rendered"], ["restored"]

    def export_artifacts(self, model: nn.Module, writer: ExportWriter) -> None:
        writer.file("lens.json", self.lens.save_json, what="lens")
        writer.file("lens_deeplens.json", lambda path: save_deeplens_json(self.lens, path), what="DeepLens JSON")
        writer.file("lens.zmx", lambda path: save_zmx(self.lens, path), what="Zemax lens")

    def export_spec(self) -> dict:
        net = self.cfg.model.net
        return {
            "target": "lightning_modules.deeplens_edof.restoration_net:build_restoration_net",
            "kwargs": {"width": net.width, "enc_blocks": list(net.enc_blocks), "middle_blocks": net.middle_blocks,
                       "dec_blocks": list(net.dec_blocks)},
            "lens": "lens.json",
        }
