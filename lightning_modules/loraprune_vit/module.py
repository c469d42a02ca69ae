"""LoRAPrune on a timm ViT image classifier (the bundled digits by default): LoRA on qkv/proj/fc1/fc2
plus a trainable head, heads and MLP channels pruned by `LoRAPruneCallback`, exported merged and sliced."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from datamodules.image_classification import ImageClassificationDataConfig, ImageClassificationDataModule
from lightning_modules.classification.module import ClassifierConfig, ImageClassifier
from lightning_modules.lora_pruning.callbacks import LoRAPruneCallback
from lightning_modules.lora_pruning.config import LoRAConfig, PruneConfig
from lightning_modules.lora_pruning.groups import protected_layers_for, vit_blocks
from lightning_modules.lora_pruning.lora_layers import linear_parts, wrap_with_lora
from lightning_modules.lora_pruning.masks import at_final_sparsity, attach_masks
from lightning_modules.lora_pruning.scoring import Criterion
from lightning_modules.lora_pruning.slicing import block_keeps, merged_copy, slice_blocks
from lightning_modules.lora_pruning.warmup import dense_warmup
from lightning_modules.loraprune_vit.net import build_vit, set_vit_head_counts, uniform_timm_kwargs, vit_layer_shapes
from tenfold.config import CheckpointConfig, ExperimentConfig, check_kwargs
from tenfold.errors import ConfigError, ExportError
from tenfold.registry import register_method

VIT_LORA_TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]  # suffixes: not patch_embed.proj


@dataclass
class LoRAPruneViTModelConfig(ClassifierConfig):
    name: str = "vit_base_patch16_224"
    arch: dict[str, Any] = field(default_factory=dict)  # timm constructor overrides (img_size, depth, ...)
    pretrained_file: str | None = None  # a local timm checkpoint; nothing is downloaded
    dense_warmup_steps: int = 0  # demo only: plain training of a from-scratch ViT before LoRAPrune
    dense_warmup_lr: float = 1e-3
    lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(targets=list(VIT_LORA_TARGETS)))
    prune: PruneConfig = field(default_factory=PruneConfig)

    def __post_init__(self) -> None:
        from timm.models.vision_transformer import VisionTransformer

        if self.name not in timm.list_models(module="vision_transformer"):
            raise ConfigError(f"model.name={self.name!r} is not a timm ViT (see timm.list_models('vit_*'))")
        check_kwargs("model.arch", self.arch, VisionTransformer.__init__, taken=("num_classes",))


@dataclass
class LoRAPruneViTConfig(ExperimentConfig):
    method: str = "loraprune_vit"
    model: LoRAPruneViTModelConfig = field(default_factory=LoRAPruneViTModelConfig)
    data: ImageClassificationDataConfig = field(default_factory=ImageClassificationDataConfig)
    checkpoint: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(monitor="val/loss_at_target"))


def _callbacks(cfg: LoRAPruneViTConfig) -> list:
    return [LoRAPruneCallback(cfg.model.prune)]


def _classification_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    images, targets = batch
    return F.cross_entropy(model(images), targets)


@register_method(
    "loraprune_vit",
    config=LoRAPruneViTConfig,
    datamodule=ImageClassificationDataModule,
    callbacks=_callbacks,
)
class LoRAPruneViT(ImageClassifier):
    monitors = ("val/loss", "val/top1", "val/top5", "val/loss_at_target")
    config_class = LoRAPruneViTConfig
    curve_metric = "val/top1"  # plotted against sparsity (lora_pruning/panels.py)

    def build_net(self, num_classes: int) -> nn.Module:
        m = self.cfg.model
        base = build_vit(m.name, num_classes, dict(m.arch), m.pretrained_file)
        net = wrap_with_lora(base, m.lora.targets, m.lora.rank, m.lora.alpha, m.lora.dropout, ["head"])
        self.blocks = vit_blocks(base, protected_layers_for(m.prune, len(base.blocks)))
        attach_masks(base, self.blocks)
        return net

    def prunable_model(self) -> nn.Module:
        return self.net.get_base_model()

    def _criterion_weights(self) -> list[Tensor]:
        return [linear_parts(self.prunable_model().get_submodule(member.path)).weight
                for block in self.blocks for member in block.members]

    def setup(self, stage: str) -> None:
        m, trainer = self.cfg.model, self.trainer
        if m.prune.criterion is Criterion.grad:
            for weight in self._criterion_weights():  # true dL/dW0 for the comparison criterion
                weight.requires_grad_(True)
        if stage == "fit" and m.dense_warmup_steps > 0 and not trainer.fast_dev_run and trainer.ckpt_path is None:
            losses = dense_warmup(self.net, trainer.datamodule.train_dataloader(), m.dense_warmup_steps,
                                  m.dense_warmup_lr, _classification_loss)
            rank_zero_info(f"dense warm-up: {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")

    def configure_optimizers(self) -> Any:
        # Only LoRA factors and the head are optimised; the `grad` criterion's W0 gradients are read, not used.
        weights = [w for w in self._criterion_weights() if w.requires_grad]
        for weight in weights:
            weight.requires_grad_(False)
        try:
            return super().configure_optimizers()
        finally:
            for weight in weights:
                weight.requires_grad_(True)

    def on_validation_epoch_start(self) -> None:
        self._at_target = at_final_sparsity(self.prunable_model(), self.blocks, self.cfg.model.prune.final_sparsity)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        logits = super().validation_step(batch, batch_idx)
        loss = F.cross_entropy(logits, batch[1])
        self.log("val/loss_at_target", loss if self._at_target else torch.full_like(loss, float("inf")),
                 sync_dist=True, batch_size=batch[1].shape[0])
        return logits

    # ---- export: the merged, sliced ViT

    def _shapes_and_sliced(self) -> tuple[list[dict], nn.Module]:
        masked = copy.deepcopy(self.net).float().cpu().eval()
        keeps = block_keeps(masked.get_base_model(), self.blocks)
        dense = merged_copy(masked)
        slice_blocks(dense, self.blocks, keeps)
        shapes = vit_layer_shapes(dense, self.blocks, keeps)
        set_vit_head_counts(dense, shapes)
        return shapes, dense

    @torch.no_grad()
    def export_model(self, atol: float = 1e-4) -> nn.Module:
        _, dense = self._shapes_and_sliced()
        masked = copy.deepcopy(self.net).float().cpu().eval()
        arch = self.cfg.model.arch
        size = arch.get("img_size", self.cfg.data.image_size)
        images = torch.randn(2, arch.get("in_chans", 3), size, size, generator=torch.Generator().manual_seed(0))
        diff = (masked(images) - dense(images)).abs().max().item()
        if not diff <= atol:
            raise ExportError(f"the sliced ViT's logits differ from the masked model's by {diff:.3g} > {atol}")
        return dense

    def export_spec(self) -> dict:
        m = self.cfg.model
        shapes, dense = self._shapes_and_sliced()
        spec = {"target": "lightning_modules.loraprune_vit.net:build_pruned_vit",
                "kwargs": {"name": m.name, "num_classes": self.num_classes, "arch": dict(m.arch),
                           "layer_shapes": shapes}}
        timm_kwargs = uniform_timm_kwargs(dense, shapes)
        if timm_kwargs is not None:  # every block one shape (model.prune.uniform=true): stock timm can build it
            spec["timm"] = {"name": m.name, "num_classes": self.num_classes, **dict(m.arch), **timm_kwargs}
        return spec
