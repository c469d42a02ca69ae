"""`method: anomaly_aug`: DRAEM's networks trained on the comprehensive anomaly simulation, split training.

One training step (manual optimisation, one optimizer update per step, so `global_step` counts batches):

    A-batch (even training images) -> simulate -> R -> L_rec = L2 + SSIM loss against the clean images
    B-batch (odd training images)  -> simulate -> R (eval mode, no grad: detached, as at test time)
                                   -> S(reconstruction, input) -> focal loss against the simulated masks
    backward(L_rec + L_seg); step.

L_rec reaches only R and L_seg only S (R's output is detached), so one backward and one Adam over both
networks is exactly two independent updates; `split_losses` is what the tests take apart. With
`model.split_training=false` the step is DRAEM's: one batch (A and B together) feeds R and S, and the
focal loss also trains R. Evaluation: anomaly map = softmax channel 1 of S, image score = max of the
mean-filtered map (or the plain max), metrics over the whole test split (see metrics.py).
"""

from __future__ import annotations

import warnings
from typing import Any

import kornia.losses
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor, nn

from datamodules.anomaly_aug_mvtec import MVTecDataModule
from lightning_modules.anomaly_aug.config import AnomalyAugConfig, ScoreMode, SimulationMode
from lightning_modules.anomaly_aug.metrics import AnomalyMetrics
from lightning_modules.anomaly_aug.net import build_detector
from lightning_modules.anomaly_aug.simulate import (
    FAMILY_CODES,
    AnomalySimulator,
    ClassOp,
    Family,
    SimulatedBatch,
    check_beta_range,
    draem_simulation,
    stream_seed,
)
from lightning_modules.anomaly_aug.sources import load_sources
from tenfold.media import has_media_logger, log_image_grid
from tenfold.method import MethodModule
from tenfold.registry import register_method

FAMILY_NAMES = [f.value for f in Family]


def class_ops_for(cfg: AnomalyAugConfig, category: str) -> list[ClassOp]:
    table = cfg.model.simulation.table
    if category not in table:
        warnings.warn(f"data.category={category} has no row in model.simulation.table: using default_ops "
                      f"{[op.value for op in cfg.model.simulation.default_ops]}", stacklevel=2)
        return list(cfg.model.simulation.default_ops)
    return list(table[category])


def overlay(images: Tensor, maps: Tensor) -> Tensor:
    """Anomaly map in red over the image: (B, 3, H, W) in [0, 1]."""
    alpha = 0.6 * maps.clamp(0, 1)[:, None]
    red = torch.zeros_like(images)
    red[:, 0] = 1
    return images * (1 - alpha) + red * alpha


@register_method("anomaly_aug", config=AnomalyAugConfig, datamodule=MVTecDataModule)
class AnomalyAugModule(MethodModule):
    monitors = ("val/image_auroc*", "val/image_ap", "val/pixel_auroc", "val/pixel_ap", "val/aupro")
    config_class = AnomalyAugConfig

    def __init__(self, config: dict, defect_names: list[str] | None = None, category: str | None = None) -> None:
        super().__init__(config, defect_names=list(defect_names or []), category=category)
        self.automatic_optimization = False
        m, sim = self.cfg.model, self.cfg.model.simulation
        check_beta_range("model.simulation.transparent_beta", *sim.transparent_beta)
        check_beta_range("model.simulation.ndaa_beta", *sim.ndaa_beta)
        self.category = category or self.cfg.data.category
        self.class_ops = class_ops_for(self.cfg, self.category)
        filter_size = m.score_filter_size if m.score is ScoreMode.mean_filtered else 1
        self.net = build_detector(m.recon_width, m.disc_width, filter_size, m.reconstruction_first)
        self.ssim = kornia.losses.SSIMLoss(m.ssim_window)  # (1 - SSIM) / 2
        # alpha=None weights both classes by 1 (DRAEM's alpha = ones); kornia's alpha=1.0 would zero the
        # background class, so every pixel could be called anomalous at no cost.
        self.focal = kornia.losses.FocalLoss(alpha=None, gamma=m.focal_gamma, reduction="none")
        self.defect_names = list(defect_names or [])
        self.eval_metrics = nn.ModuleDict({s: AnomalyMetrics(m.aupro_fpr_limit, self.defect_names)
                                           for s in ("val", "test")})
        self.register_buffer("family_counts", torch.zeros(len(Family)), persistent=False)
        self.simulator: AnomalySimulator | None = None
        self.sources: Tensor | None = None

    # ---- simulation

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.sources is None:
            d = self.cfg.data
            self.sources = load_sources(d.image_size, d.anomaly_source_dir, d.bundled_sources, d.max_sources)

    def build_simulator(self, sources: Tensor) -> AnomalySimulator:
        sim = self.cfg.model.simulation
        return AnomalySimulator(sources, self.class_ops, sim.p_clean, tuple(sim.transparent_beta),
                                tuple(sim.ndaa_beta), tuple(sim.families), sim.max_tries)

    def generator(self) -> torch.Generator:
        # One stream per (seed, rank, epoch, step); the simulation runs here, not in data-loader workers.
        seed = stream_seed(self.cfg.seed, self.global_rank, 0, self.current_epoch, self.global_step)
        return torch.Generator(device=self.device).manual_seed(seed)

    def simulate(self, images: Tensor, g: torch.Generator) -> tuple[Tensor, SimulatedBatch]:
        """(R's target, simulated batch) for normal images."""
        if self.sources is None:
            self.setup("fit")
        if self.sources.device != images.device:
            self.sources = self.sources.to(images.device)
            self.simulator = None
        if self.cfg.model.simulation.mode is SimulationMode.draem:
            return draem_simulation(images, self.sources, g, self.cfg.model.simulation.p_clean)
        if self.simulator is None:
            self.simulator = self.build_simulator(self.sources)
        return images, self.simulator.simulate(images, g)

    # ---- losses

    def reconstruction_loss(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(reconstruction, target) + 2 * self.ssim(reconstruction, target)

    def segmentation_loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        # kornia returns the focal term in the target's channel and 0 elsewhere: sum channels, mean pixels
        return self.focal(logits, masks[:, 0].long()).sum(1).mean()

    def split_losses(self, half_a: Tensor, half_b: Tensor, g: torch.Generator) -> dict[str, Any]:
        """The paper's split strategy: L_rec from half A only, L_seg from half B with R's output detached."""
        target, sim_a = self.simulate(half_a, g)
        rec_loss = self.reconstruction_loss(self.net.reconstructive(sim_a.images), target)
        _, sim_b = self.simulate(half_b, g)
        r = self.net.reconstructive
        was_training = r.training
        with torch.no_grad():
            r.eval()  # BN running statistics, as at test time; R's buffers stay untouched by half B
            reconstruction = r(sim_b.images)
            r.train(was_training)
        logits = self.net.segment(reconstruction, sim_b.images)
        return {"rec": rec_loss, "seg": self.segmentation_loss(logits, sim_b.masks), "shown": sim_b,
                "families": torch.cat((sim_a.family, sim_b.family)), "redraws": sim_a.redraws + sim_b.redraws}

    def joint_losses(self, images: Tensor, g: torch.Generator) -> dict[str, Any]:
        """DRAEM: one batch, both losses, the focal loss back-propagates into R too."""
        target, sim = self.simulate(images, g)
        reconstruction = self.net.reconstructive(sim.images)
        logits = self.net.segment(reconstruction, sim.images)
        return {"rec": self.reconstruction_loss(reconstruction, target),
                "seg": self.segmentation_loss(logits, sim.masks), "shown": sim, "families": sim.family,
                "redraws": sim.redraws}

    # ---- steps

    def training_step(self, batch: dict[str, list[Tensor]], batch_idx: int) -> Tensor:
        (images_a, _), (images_b, _) = batch["a"], batch["b"]
        g = self.generator()
        if self.cfg.model.split_training:
            losses = self.split_losses(images_a, images_b, g)
        else:
            losses = self.joint_losses(torch.cat((images_a, images_b)), g)
        loss = losses["rec"] + losses["seg"]
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step_update(num_updates=self.global_step)
        n = images_a.shape[0]
        self.log_train_loss(loss, n)
        self.log("train/loss_rec", losses["rec"], on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("train/loss_seg", losses["seg"], on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        self.family_counts += torch.bincount(losses["families"], minlength=len(Family)).float()
        if batch_idx == 0:
            self._log_simulated(losses["shown"])
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        counts = self.trainer.strategy.reduce(self.family_counts.clone(), reduce_op="sum")
        total = counts.sum().clamp_min(1)
        for name, code in FAMILY_CODES.items():
            self.log(f"train/family/{name.value}", counts[code] / total, sync_dist=False, rank_zero_only=True)
        self.family_counts.zero_()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(images)

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int, stage: str) -> None:
        maps, scores = self(batch["image"])
        self.eval_metrics[stage].update(batch["index"], scores, batch["label"], batch["defect"], maps, batch["mask"])
        if batch_idx == 0:
            self._log_maps(stage, batch, maps)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        values = self._log_metrics("test")
        self._log_tables(values)

    def _log_metrics(self, stage: str) -> dict[str, float]:
        metric = self.eval_metrics[stage]
        values = {k: v.float() for k, v in metric.compute().items()}  # every rank: the gathered test split
        metric.reset()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "image_auroc", sync_dist=True)
        return {k: float(v) for k, v in values.items()}

    # ---- pictures and tables (rank 0, media loggers only)

    def _media(self) -> bool:
        return (self.trainer.is_global_zero and not self.trainer.sanity_checking and self.cfg.model.log_images > 0
                and has_media_logger(self.loggers))

    def _log_simulated(self, sim: SimulatedBatch) -> None:
        if not self._media():
            return
        k = min(self.cfg.model.log_images, len(sim.images))
        tiles, captions = [], []
        for i in range(k):
            tiles += [sim.images[i], sim.masks[i]]
            captions += [FAMILY_NAMES[int(sim.family[i])], "mask"]
        log_image_grid(self.loggers, "train/simulated", [t.detach().float().cpu() for t in tiles], self.global_step,
                       captions, nrow=8)

    def _log_maps(self, stage: str, batch: dict[str, Tensor], maps: Tensor) -> None:
        if not self._media():
            return
        k = min(self.cfg.model.log_images, len(maps))
        defect_rows = (batch["label"] > 0).nonzero().flatten()[: k // 2]
        good_rows = (batch["label"] == 0).nonzero().flatten()[: k - len(defect_rows)]
        rows = torch.cat((defect_rows, good_rows))  # defects and normals side by side where the batch has both
        images = batch["image"][rows].float()
        over = overlay(images, maps[rows].float())
        tiles, captions = [], []
        for j, i in enumerate(rows.tolist()):
            name = "good" if int(batch["defect"][i]) < 0 else self.defect_names[int(batch["defect"][i])]
            tiles += [images[j], over[j], batch["mask"][i].float()]
            captions += [name, "anomaly map", "ground truth"]
        log_image_grid(self.loggers, f"{stage}/anomaly_maps", [t.detach().cpu() for t in tiles], self.global_step,
                       captions, nrow=9)

    def _log_tables(self, values: dict[str, float]) -> None:
        if not self.trainer.is_global_zero:
            return
        headline = ["image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "aupro"]
        per_defect = [[name, values[f"image_auroc/{name}"]] for name in self.defect_names
                      if f"image_auroc/{name}" in values]
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("test/per_class", columns=["category", *headline],
                                 data=[[self.category, *(values[k] for k in headline)]])
                logger.log_table("test/per_defect", columns=["defect", "image_auroc"], data=per_defect)

    # ---- export

    def export_spec(self) -> dict:
        net = self.net
        return {"target": "lightning_modules.anomaly_aug.net:build_detector",
                "kwargs": {"recon_width": self.cfg.model.recon_width, "disc_width": self.cfg.model.disc_width,
                           "score_filter_size": net.score_filter_size,
                           "reconstruction_first": net.reconstruction_first}}

    def onnx_io(self) -> tuple[list[str], list[str]]:
        return ["images"], ["anomaly_map", "score"]
