"""ssl_trajectory's LightningModule: an SSL loss on two augmentations of the centre view plus λ times the
trajectory loss on the unaugmented (L, C, R) triplet; frozen-feature pose/semantic evaluation.

Training steps see five image tensors and no labels. Validation runs the online evaluation every epoch
(fixed kNN setting, detached features); test runs the offline protocol: pose kNN per category on each
layer with (k, metric, T) selected on the validation split, the full grid written to pose_knn_grid.json, and
the relative-pose probe on pairs of views (relative_pose.py).
Feature banks are gathered from every DDP rank and de-duplicated by dataset index, so the accuracies
equal those of one process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightly.loss import NegativeCosineSimilarity, NTXentLoss, VICRegLoss
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss
from lightning.pytorch.utilities import rank_zero_info
from timm.optim import Lars
from torch import Tensor

from datamodules.ssl_trajectory import PoseBenchmarkDataModule
from lightning_modules.ssl_trajectory.config import SSLLoss, SSLTrajectoryConfig, TrajectoryForm
from lightning_modules.ssl_trajectory.knn import (
    KnnSetting,
    knn_grid,
    linear_probe_accuracy,
    per_group_accuracy,
    select_on_val,
    warn_if_k_too_large,
)
from lightning_modules.ssl_trajectory.net import (
    build_backbone,
    build_predictor,
    build_projector,
    load_imagenet_init,
    patch_norm,
)
from lightning_modules.ssl_trajectory.relative_pose import relative_pose_accuracy
from lightning_modules.ssl_trajectory.trajectory_loss import trajectory_loss
from tenfold.errors import CheckpointError, ConfigError
from tenfold.media import figure_image, has_media_logger, log_image, log_image_grid, pyplot
from tenfold.method import MethodModule
from tenfold.registry import register_method


def validate(cfg: SSLTrajectoryConfig) -> None:
    """Config values that make the objective undefined, one line each."""
    m = cfg.model
    if m.traj_lambda < 0:
        raise ConfigError(
            f"model.traj_lambda={m.traj_lambda} is negative: a negative weight rewards folded "
            "triplets; use 0 (off) or a positive weight (paper: 0.2)"
        )
    if m.loss in (SSLLoss.vicreg, SSLLoss.simclr) and cfg.data.batch_size_per_device < 2:
        raise ConfigError(
            f"model.loss={m.loss.value} needs data.batch_size_per_device >= 2 (got "
            f"{cfg.data.batch_size_per_device}): the batch variance/negatives are undefined for one view"
        )
    if not cfg.eval.ks or min(cfg.eval.ks) < 1 or cfg.eval.online_k < 1:
        raise ConfigError("eval.ks and eval.online_k must be positive integers")
    if cfg.eval.relative_pose and (cfg.eval.rel_pose_bins < 2 or cfg.eval.rel_pose_pairs < 1):
        raise ConfigError(
            f"eval.rel_pose_bins={cfg.eval.rel_pose_bins} and eval.rel_pose_pairs={cfg.eval.rel_pose_pairs}: the "
            "relative-pose probe needs >= 2 bins (paper: 50) and >= 1 pair, or eval.relative_pose=false"
        )


def unlabelled_views(batch: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(T1, T2, L, C, R) image batches; anything else (a label, a pose index) is refused."""
    ok = (
        isinstance(batch, (tuple, list))
        and len(batch) == 5
        and all(torch.is_tensor(x) and x.is_floating_point() and x.ndim == 4 for x in batch)
    )
    if not ok:
        raise TypeError(
            "ssl_trajectory training batches must be exactly five float image batches "
            "(T1, T2, x_L, x_C, x_R) with no labels"
        )
    return tuple(batch)


@register_method("ssl_trajectory", config=SSLTrajectoryConfig, datamodule=PoseBenchmarkDataModule)
class SSLTrajectoryModule(MethodModule):
    monitors = ("val/*",)  # val/pose_knn, per layer, and the semantic kNN/probe
    config_class = SSLTrajectoryConfig

    def __init__(
        self,
        config: dict,
        categories: list[str],
        ood_categories: list[str],
        n_poses: int,
        val_sets: list[str],
        test_sets: list[str],
    ) -> None:
        super().__init__(
            config,
            categories=categories,
            ood_categories=ood_categories,
            n_poses=n_poses,
            val_sets=val_sets,
            test_sets=test_sets,
        )
        validate(self.cfg)
        m = self.cfg.model
        self.categories, self.ood_categories, self.n_poses = list(categories), list(ood_categories), n_poses
        self.val_sets, self.test_sets = list(val_sets), list(test_sets)
        self.net = build_backbone(m.backbone.width, m.backbone.blocks)
        if m.backbone.imagenet_init:
            if not Path(m.backbone.imagenet_init).is_file():
                raise CheckpointError(
                    f"model.backbone.imagenet_init={m.backbone.imagenet_init} not found: point it "
                    "at torchvision's resnet18-f37072fd.pth, or null to train from scratch"
                )
            rank_zero_info("model.backbone.imagenet_init: starting from SUPERVISED ImageNet weights (not the paper)")
            load_imagenet_init(self.net, m.backbone.imagenet_init)
        self.projector = build_projector(
            m.loss.value, self.net.feature_dim, m.projector_hidden_dim, m.projector_out_dim
        )
        self.predictor = (
            build_predictor(m.projector_out_dim, m.predictor_hidden_dim) if m.loss is SSLLoss.simsiam else None
        )
        if m.loss is SSLLoss.vicreg:
            self.ssl_loss = VICRegLoss(
                m.vicreg_invariance,
                m.vicreg_variance * (2 if m.variance_sum else 1),
                m.vicreg_covariance,
                gather_distributed=True,
            )
        elif m.loss is SSLLoss.simclr:
            self.ssl_loss = NTXentLoss(temperature=m.simclr_temperature, gather_distributed=True)
        else:
            self.ssl_loss = NegativeCosineSimilarity()
        self._features: dict[str, dict[str, list[Tensor]]] = {}

    def forward(self, images: Tensor) -> Tensor:
        """The pooled feature (what the export computes)."""
        return self.net(images)

    # ---- the objective

    def semantic_loss(self, t1: Tensor, t2: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        pooled = self.net(torch.cat([t1, t2]))
        z1, z2 = self.projector(pooled).chunk(2)
        terms: dict[str, Tensor] = {}
        if self.cfg.model.loss is SSLLoss.simsiam:
            p1, p2 = self.predictor(z1), self.predictor(z2)
            loss = 0.5 * (self.ssl_loss(p1, z2.detach()) + self.ssl_loss(p2, z1.detach()))
        else:
            loss = self.ssl_loss(z1, z2)
        if self.cfg.model.loss is SSLLoss.vicreg:
            with torch.no_grad():  # the three terms, unweighted and rank-local, for the dashboards
                terms = {
                    "invariance": invariance_loss(z1, z2),
                    "variance": 0.5 * (variance_loss(z1) + variance_loss(z2)),
                    "covariance": covariance_loss(z1) + covariance_loss(z2),
                }
        return loss, terms

    def trajectory_term(self, x_l: Tensor, x_c: Tensor, x_r: Tensor) -> Tensor:
        m = self.cfg.model
        feats = self.net.features(torch.cat([x_l, x_c, x_r]))[m.traj_layer.value]
        f_l, f_c, f_r = feats.chunk(3)
        return trajectory_loss(f_l, f_c, f_r, geodesic=m.traj_form is TrajectoryForm.geodesic, eps=m.traj_eps)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        t1, t2, x_l, x_c, x_r = unlabelled_views(batch)
        if batch_idx == 0 and self.current_epoch == 0:
            self._log_triplets(t1, t2, x_l, x_c, x_r)
        sem, terms = self.semantic_loss(t1, t2)
        loss = sem
        size = t1.shape[0]
        if self.cfg.model.traj_lambda > 0:
            traj = self.trajectory_term(x_l, x_c, x_r)
            loss = sem + self.cfg.model.traj_lambda * traj
            self.log("train/traj_loss", traj, on_step=True, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("train/sem_loss", sem, on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        for name, value in terms.items():
            self.log(f"train/vicreg_{name}", value, on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        self.log_train_loss(loss, size)
        return loss

    def configure_optimizers(self) -> Any:
        config = super().configure_optimizers()
        optimizer = config["optimizer"] if isinstance(config, dict) else config
        if isinstance(optimizer, Lars):  # the release's LARS: eta 0.02 and clipping (timm's defaults differ)
            for group in optimizer.param_groups:
                group["trust_coeff"], group["trust_clip"] = self.cfg.model.lars_eta, self.cfg.model.lars_clip
        return config

    # ---- frozen-feature evaluation

    def _layers(self) -> list[str]:
        layers = [layer.value for layer in self.cfg.eval.layers]
        return layers + ([] if self.cfg.eval.monitor_layer.value in layers else [self.cfg.eval.monitor_layer.value])

    def _collect(self, batch: Any, set_name: str) -> None:
        images, category, pose, index, instance, direction = batch
        feats = self.net.features(images)
        row = {"category": category, "pose": pose, "index": index, "instance": instance, "direction": direction}
        for layer in self._layers():
            row[layer] = feats[layer].float() if layer == "pooled" else patch_norm(feats[layer].float())
        store = self._features.setdefault(set_name, {})
        for key, value in row.items():
            store.setdefault(key, []).append(value.detach())

    def _gathered(self) -> dict[str, dict[str, Tensor]]:
        """Every set's features from all ranks, de-duplicated by dataset index and in index order."""
        out = {}
        for set_name, store in self._features.items():
            joined = {key: torch.cat(values) for key, values in store.items()}
            if self.trainer.world_size > 1:
                joined = {key: self.all_gather(value).flatten(0, 1) for key, value in joined.items()}
            index = joined["index"]
            sorted_index, order = index.sort(stable=True)
            first = torch.ones_like(sorted_index, dtype=torch.bool)
            first[1:] = sorted_index[1:] != sorted_index[:-1]
            keep = order[first]
            out[set_name] = {key: value[keep] for key, value in joined.items()}
        self._features = {}
        return out

    def on_validation_epoch_start(self) -> None:
        self._features = {}

    def on_test_epoch_start(self) -> None:
        self._features = {}

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, self.val_sets[dataloader_idx])

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, self.test_sets[dataloader_idx])

    def _pose_accuracy(self, sets: dict, bank: str, query: str, layer: str, setting: KnnSetting) -> float:
        b, q = sets[bank], sets[query]
        return per_group_accuracy(
            b[layer], b["pose"], b["category"], q[layer], q["pose"], q["category"], self.n_poses, setting
        )

    def _semantic(self, sets: dict, query: str, k: int) -> dict[str, float]:
        b, q = sets["bank"], sets[query]
        setting = KnnSetting(min(k, len(b["pooled"])), "cosine", 0.1)
        knn = per_group_accuracy(
            b["pooled"],
            b["category"],
            torch.zeros_like(b["category"]),
            q["pooled"],
            q["category"],
            torch.zeros_like(q["category"]),
            len(self.categories),
            setting,
        )
        probe = linear_probe_accuracy(
            b["pooled"],
            b["category"],
            q["pooled"],
            q["category"],
            len(self.categories),
            steps=self.cfg.eval.probe_steps,
            seed=self.cfg.seed,
        )
        return {"sem_knn": knn, "sem_linear": probe}

    def on_validation_epoch_end(self) -> None:
        sets = self._gathered()
        if not {"bank", "val"} <= set(sets):
            return
        e = self.cfg.eval
        online = KnnSetting(e.online_k, "cosine", e.online_temperature)
        metrics = {
            f"val/pose_knn_{layer}": self._pose_accuracy(sets, "bank", "val", layer, online) for layer in self._layers()
        }
        metrics["val/pose_knn"] = metrics[f"val/pose_knn_{e.monitor_layer.value}"]
        metrics.update({f"val/{k}": v for k, v in self._semantic(sets, "val", e.semantic_k).items()})
        # The same numbers on every rank (gathered banks); the sync only keeps Lightning's epoch logging uniform.
        self.log_dict(metrics, sync_dist=True, prog_bar=False)

    def on_test_epoch_end(self) -> None:
        sets = self._gathered()
        if not {"bank", "val", "test"} <= set(sets):
            return
        e = self.cfg.eval
        grid = knn_grid(list(e.ks), list(e.temperatures))
        self._warn_k(sets)
        metrics: dict[str, float] = {}
        report: dict[str, Any] = {"grid": [s.name for s in grid], "layers": {}}
        for layer in self._layers():
            val = {s: self._pose_accuracy(sets, "bank", "val", layer, s) for s in grid}
            test = {s: self._pose_accuracy(sets, "bank", "test", layer, s) for s in grid}
            best = select_on_val(val)
            metrics[f"test/pose_knn_{layer}"] = test[best]
            if "ood_pose" in sets:
                metrics[f"test/pose_knn_{layer}_ood_pose"] = self._pose_accuracy(sets, "bank", "ood_pose", layer, best)
            if {"ood_bank", "ood_test"} <= set(sets):
                metrics[f"test/pose_knn_{layer}_ood_category"] = self._pose_accuracy(
                    sets, "ood_bank", "ood_test", layer, best
                )
            report["layers"][layer] = {
                "selected_on_val": best.name,
                "val": {s.name: a for s, a in val.items()},
                "test": {s.name: a for s, a in test.items()},
            }
        metrics["test/pose_knn"] = metrics[f"test/pose_knn_{e.monitor_layer.value}"]
        metrics.update({f"test/{k}": v for k, v in self._semantic(sets, "test", e.semantic_k).items()})
        if e.relative_pose:
            metrics.update(self._relative_pose(sets, report))
        self.log_dict(metrics, sync_dist=True)
        if self.trainer.is_global_zero:
            self._log_layer_panel(metrics)
            report["metrics"] = metrics
            path = self.run_dir / "pose_knn_grid.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report, indent=1))

    def _relative_pose(self, sets: dict, report: dict) -> dict[str, float]:
        """test/rel_pose_<layer>[_ood_pose|_ood_category]: the pair probe trained on bank pairs (relative_pose.py)."""
        e = self.cfg.eval
        queries = {"": "test", "_ood_pose": "ood_pose", "_ood_category": "ood_test"}
        queries = {suffix: name for suffix, name in queries.items() if name in sets}
        if not all(torch.isfinite(sets[name]["direction"]).all() for name in ["bank", *queries.values()]):
            rank_zero_info("relative pose: skipped (no pose table in meta.json, so the view vectors are unknown)")
            return {}
        metrics: dict[str, float] = {}
        for layer in self._layers():

            def triple(name: str, layer: str = layer) -> tuple[Tensor, Tensor, Tensor]:
                return sets[name][layer], sets[name]["direction"], sets[name]["instance"]

            accuracy, majority = relative_pose_accuracy(
                triple("bank"),
                {suffix: triple(name) for suffix, name in queries.items()},
                e.rel_pose_pairs,
                e.rel_pose_bins,
                e.probe_steps,
                self.cfg.seed,
            )
            metrics.update({f"test/rel_pose_{layer}{suffix}": value for suffix, value in accuracy.items()})
            report.setdefault("relative_pose_majority_bin", {k or "_test": v for k, v in majority.items()})
        if f"test/rel_pose_{e.monitor_layer.value}" in metrics:
            metrics["test/rel_pose"] = metrics[f"test/rel_pose_{e.monitor_layer.value}"]
        return metrics

    def _warn_k(self, sets: dict) -> None:
        counts = sets["bank"]["category"].unique(return_counts=True)[1]
        warn_if_k_too_large(list(self.cfg.eval.ks), counts, "per-category pose")

    # ---- dashboards

    def _log_triplets(self, t1: Tensor, t2: Tensor, x_l: Tensor, x_c: Tensor, x_r: Tensor) -> None:
        if not (self.trainer.is_global_zero and has_media_logger(self.loggers)):
            return
        mean = torch.tensor(self.cfg.data.mean, device=t1.device).view(3, 1, 1)
        std = torch.tensor(self.cfg.data.std, device=t1.device).view(3, 1, 1)
        n = min(self.cfg.eval.triplet_examples, t1.shape[0])
        images, captions = [], []
        for i in range(n):
            for name, batch in (("L", x_l), ("C", x_c), ("R", x_r), ("T1", t1), ("T2", t2)):
                images.append((batch[i] * std + mean).clamp(0, 1))
                captions.append(name)
        log_image_grid(self.loggers, "train/triplets", images, self.global_step, captions, nrow=5)

    def _log_layer_panel(self, metrics: dict[str, float]) -> None:
        """test/accuracy_per_layer: one bar chart of pose kNN (in-domain, OOD poses, OOD categories) and
        relative pose for each layer."""
        if not has_media_logger(self.loggers):
            return
        layers = self._layers()
        panels = (
            ("pose kNN", "pose_knn", ""),
            ("pose kNN, OOD poses", "pose_knn", "_ood_pose"),
            ("pose kNN, OOD categories", "pose_knn", "_ood_category"),
            ("relative pose", "rel_pose", ""),
        )
        series = {
            name: [metrics.get(f"test/{kind}_{layer}{suffix}", float("nan")) * 100 for layer in layers]
            for name, kind, suffix in panels
        }
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.2))
        width = 0.8 / len(series)
        for n, (name, values) in enumerate(series.items()):
            ax.bar([i + (n - (len(series) - 1) / 2) * width for i in range(len(layers))], values, width, label=name)
        ax.set_xticks(range(len(layers)), layers)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"frozen features per layer (chance: pose {100 / self.n_poses:.0f}%)")
        ax.legend(fontsize=7)
        log_image(self.loggers, "test/accuracy_per_layer", figure_image(fig), self.global_step)

    # ---- export: the backbone (pooled feature out); the projector is training-only

    def export_spec(self) -> dict:
        b = self.cfg.model.backbone
        return {
            "target": "lightning_modules.ssl_trajectory.net:build_backbone",
            "kwargs": {"width": b.width, "blocks": list(b.blocks)},
        }

    def onnx_io(self) -> tuple[list[str], list[str]]:
        return ["images"], ["pooled"]
